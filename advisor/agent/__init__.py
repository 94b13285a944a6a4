"""The device agent: runs where the model will run and measures it there.

`ssh HOST python3 -m advisor.agent --stdio` (or pushed by advisor over the same SSH command, see
`advisor.device.bundle`) speaks the JSON-lines protocol of `advisor.agent.protocol` on its stdin
and stdout. It needs only the Python standard library, onnxruntime and numpy (psutil if present):
nothing in this package, nor anything it imports, may import torch (a test proves it).

- `protocol`: message framing, version, size caps (shared with the host side).
- `store`: the content-addressed cache of uploaded files, with a size cap.
- `onnx_check`: what an uploaded model must be before it is used (ONNX, no external data).
- `server`: the request loop and its operations.
"""
