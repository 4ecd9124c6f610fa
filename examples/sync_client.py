"""The blocking twin: the same calls without ``await``.

export UML_API_KEY=$(cat .uml/admin.key)
python examples/sync_client.py
"""

from __future__ import annotations

import os

from client.universal_client import SyncOpenAICompatibleClient, SyncUniversalClient

MODEL = os.environ.get("UML_MODEL", "tiny")


def main() -> None:
    with SyncUniversalClient() as client:
        print("health:", client.health_check().status)
        print("complete:", repr(client.complete(MODEL, "Hello", max_tokens=8).choices[0].text))
        with client.stream_complete(MODEL, "Hello", max_tokens=8) as chunks:
            print("stream:", repr("".join(c.choices[0].text for c in chunks if c.choices)))
        job = client.submit_job(MODEL, prompt="A job", max_tokens=8)
        print("job:", client.wait_job(job.id, timeout=60).status)
        with client.websocket() as ws:
            text, done = ws.text(ws.generate(MODEL, prompt="ws", max_tokens=8), timeout=60)
            print("ws:", done.finish_reason, repr(text))

    with SyncOpenAICompatibleClient(base_url=os.environ.get("UML_BASE_URL")) as openai_client:
        stream = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
        )
        with stream:
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        print("openai-shaped stream:", repr("".join(pieces)))


if __name__ == "__main__":
    main()
