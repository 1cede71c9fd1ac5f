"""Normal and streaming chat completions through the Sequester gateway with the official
OpenAI SDK. Prints one JSON line with what the client saw."""
import json
import os
import sys

from openai import OpenAI

client = OpenAI(api_key=os.environ["AGENT_TOKEN"], base_url=os.environ["GATEWAY_BASE_URL"])
normal = client.chat.completions.create(
    model="test-model", messages=[{"role": "user", "content": "hi"}]
)
chunks = []
raw = [normal.model_dump_json()]
stream = client.chat.completions.create(
    model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
)
for chunk in stream:
    raw.append(chunk.model_dump_json())
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)
models = [m.id for m in client.models.list()]
print(json.dumps({
    "normal": normal.choices[0].message.content,
    "stream": "".join(chunks),
    "stream_chunks": len(chunks),
    "models": models,
    "raw": raw,
}))
sys.stdout.flush()
