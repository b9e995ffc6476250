"""Chat with a running model through the OpenAI SDK and the RESTfulClient.

Run after ``xinference launch --model-name smollm2-instruct`` against the server at
``$XINFERENCE_ENDPOINT`` (default http://127.0.0.1:9997).
"""

import os

import openai

from xinference.client import RESTfulClient

endpoint = os.environ.get("XINFERENCE_ENDPOINT", "http://127.0.0.1:9997")
model_uid = os.environ.get("MODEL_UID", "smollm2-instruct")

client = openai.Client(api_key="not empty", base_url=f"{endpoint}/v1")
resp = client.chat.completions.create(
    model=model_uid,
    messages=[{"role": "user", "content": "What is the largest animal?"}],
    max_tokens=64,
    temperature=0,
)
print("OpenAI SDK:", resp.choices[0].message.content)
print("usage:", resp.usage)

model = RESTfulClient(endpoint).get_model(model_uid)
print("RESTfulClient (stream): ", end="", flush=True)
for chunk in model.chat(
    messages=[{"role": "user", "content": "Name three colors."}],
    generate_config={"max_tokens": 48, "stream": True},
):
    if chunk["choices"]:
        print(chunk["choices"][0]["delta"].get("content", ""), end="", flush=True)
print()
