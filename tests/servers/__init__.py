"""Loopback stand-ins for the services the code talks to (the Hugging Face Hub, an OpenAI-compatible API) and the
COCO files the data engine reads. Test and benchmark helpers only: stdlib (+ yaml), never imported by hf_llava."""
