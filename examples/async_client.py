"""Every feature of the async client, against a running service.

export UML_API_KEY=$(cat .uml/admin.key)   # after `uml dev`
python examples/async_client.py            # UML_BASE_URL, UML_MODEL to point elsewhere
"""

from __future__ import annotations

import asyncio
import os

from client.universal_client import (
    JobError,
    NotFoundError,
    OpenAICompatibleClient,
    UniversalClient,
)

MODEL = os.environ.get("UML_MODEL", "tiny")
HELLO = [{"role": "user", "content": "Hello!"}]


async def main() -> None:
    # base_url defaults to UML_BASE_URL, else http://localhost:8000; the key to UML_API_KEY
    async with UniversalClient() as client:
        health = await client.health_check()
        print("health:", health.status, "models:", health.models)
        print("models:", [m.id for m in (await client.list_models()).data])

        # OpenAI-shaped calls, whole and streamed
        reply = await client.chat(MODEL, HELLO, max_tokens=16)
        print("chat:", repr(reply.choices[0].message.content), reply.usage)
        text = await client.complete(MODEL, "Once upon a time", max_tokens=16, seed=1)
        print("complete:", repr(text.choices[0].text))
        async with await client.stream_chat(MODEL, HELLO, max_tokens=16) as chunks:
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
        print()

        # background jobs: submit (one Idempotency-Key for all retries), follow, wait, cancel
        job = await client.submit_job(MODEL, prompt="A job", max_tokens=24, metadata={"demo": "1"})
        async with await client.stream_job(job.id) as events:  # resumes by itself on drops
            async for event in events:
                print(f"  seq {event.seq}: {type(event).__name__}")
        done = await client.wait_job(job.id)
        print("job:", done.status, repr(done.text))
        long = await client.submit_job(MODEL, messages=HELLO, max_tokens=2000)
        print("cancelled:", (await client.cancel_job(long.id)).status)
        try:
            failing = await client.submit_job(MODEL, prompt="a" * 3000, max_tokens=4)
            async with await client.stream_job(failing.id) as events:
                async for _ in events:
                    pass
        except JobError as exc:
            print("job error:", exc.code)

        # typed errors
        try:
            await client.complete("no-such-model", "x")
        except NotFoundError as exc:
            print("error:", exc.status_code, exc.code)

        # several jobs on one WebSocket; closing it cancels the jobs it started
        async with client.websocket() as ws:
            ids = [await ws.generate(MODEL, prompt=p, max_tokens=12) for p in ("a", "b")]
            for job_id, (text, done_msg) in zip(
                ids, await asyncio.gather(*(ws.text(i) for i in ids)), strict=True
            ):
                print("ws:", job_id, done_msg.finish_reason, repr(text))

    # the openai SDK's call shape
    openai_client = OpenAICompatibleClient(base_url=os.environ.get("UML_BASE_URL"))
    response = await openai_client.chat.completions.create(model=MODEL, messages=HELLO)
    print("openai-shaped:", repr(response.choices[0].message.content[:40]))
    await openai_client.close()


if __name__ == "__main__":
    asyncio.run(main())
