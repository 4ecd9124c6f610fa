"""The official ``openai`` SDK against the service, unchanged but for base_url and key.

pip install openai
export UML_API_KEY=$(cat .uml/admin.key)
python examples/openai_sdk.py
"""

from __future__ import annotations

import asyncio
import os

import openai

BASE = os.environ.get("UML_BASE_URL", "http://localhost:8000") + "/v1"
KEY = os.environ["UML_API_KEY"]
MODEL = os.environ.get("UML_MODEL", "tiny")


async def main() -> None:
    async with openai.AsyncOpenAI(base_url=BASE, api_key=KEY) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="")
        print()
    with openai.OpenAI(base_url=BASE, api_key=KEY) as sync_client:
        print([m.id for m in sync_client.models.list()])


if __name__ == "__main__":
    asyncio.run(main())
