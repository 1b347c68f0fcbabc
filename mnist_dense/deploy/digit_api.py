"""The LitServe side of `serve`: the request schema, the `LitAPI` around the network, the page's routes.

The picture is decoded and prepared where the request is validated, in the HTTP process (`DigitRequest`),
not in `LitAPI.decode_request`: LitServe answers every request of a batch with the error of any one of
them (LitServe issue 340), so a bad picture must never reach a batch. The model's worker process then only
stacks prepared digits and runs the network. This module needs the `deploy` extra.

No `from __future__ import annotations` here: LitServe reads `decode_request`'s annotation at run time to
build the endpoint, and a string would not name the schema.
"""

import base64
import binascii
import signal
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import torch
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from torch import Tensor
from torchvision.io import encode_png

from mnist_dense.constants import IMAGE_SIZE
from mnist_dense.deploy.inference import load_inference_model
from mnist_dense.pictures import prepare_picture

MAX_BODY_BYTES = 1_000_000
REQUEST_EXAMPLE = '{"image": "<base64 PNG or JPEG, or a data: URL>"}'
PAGE_FOLDER = Path(__file__).parent / "page"
PAGE_URL = "/draw"
# The page's own files only, read once: no request path ever reaches the file system.
PAGE_FILES = {
    PAGE_URL: ("index.html", "text/html; charset=utf-8"),
    f"{PAGE_URL}/app.js": ("app.js", "text/javascript; charset=utf-8"),
    f"{PAGE_URL}/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Nothing from another site: the page works offline, and the browser refuses anything else.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def picture_bytes(value: Any) -> bytes:
    """The request's `image`: base64, or a data: URL holding base64 -> the picture file's bytes."""
    if not isinstance(value, str):
        raise ValueError(f"image must be a string (a picture in base64, or a data: URL), not {type(value).__name__}")
    text = value.strip()
    if text[:5].lower() == "data:":
        header, _, text = text.partition(",")
        if not header.lower().endswith(";base64"):
            raise ValueError("image is a data: URL but not base64 (expected data:image/png;base64,...)")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "image is not valid base64 (send the picture's bytes base64-encoded, or a data: URL)"
        ) from None


def prepared_digit(value: Any) -> bytes:
    """The request's `image` -> the prepared 28x28 digit as 784 bytes; a ValueError becomes a 422 naming it."""
    return prepare_picture(picture_bytes(value)).numpy().tobytes()


PreparedDigit = Annotated[
    bytes,
    BeforeValidator(prepared_digit),
    WithJsonSchema({"type": "string", "description": "A PNG, JPEG, GIF, WebP or BMP picture: base64 or a data: URL"}),
]


class DigitRequest(BaseModel):
    """The body of `POST /predict`; validating it decodes and prepares the picture."""

    image: PreparedDigit = Field(description="One digit, any size, dark on light or light on dark")


class DigitAPI(ls.LitAPI):
    """Prepared digits in, the checkpoint's probabilities out; batched by LitServe when max_batch_size > 1.

    Module-level with plain attributes: LitServe pickles it into its worker process.
    """

    def __init__(self, ckpt_path: str, max_batch_size: int = 16, batch_timeout: float = 0.005) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)  # one small matrix product a batch; more threads would fight the HTTP process
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops this worker
        self.model = load_inference_model(Path(self.ckpt_path))

    def decode_request(self, request: DigitRequest) -> Tensor:
        return torch.frombuffer(bytearray(request.image), dtype=torch.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)

    @torch.inference_mode()
    def predict(self, digits: Tensor) -> list[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor]:
        """(B, 28, 28) when batching (LitServe stacks the decoded requests), (28, 28) without."""
        batch = digits.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        answers = list(zip(batch, self.model(batch[:, None].float()), strict=True))
        return answers if digits.dim() == 3 else answers[0]

    def encode_response(self, answer: tuple[Tensor, Tensor]) -> dict:
        digit, probabilities = answer
        picture = base64.b64encode(encode_png(digit[None]).numpy().tobytes()).decode()
        return {
            "digit": int(probabilities.argmax()),
            "probability": round(float(probabilities.max()), 6),
            "probabilities": [round(p, 6) for p in probabilities.tolist()],
            "prepared": f"data:image/png;base64,{picture}",  # the 28x28 picture the network saw
        }


def build_server(ckpt_path: Path, max_batch_size: int = 16, batch_timeout: float = 0.005) -> ls.LitServer:
    """A LitServer for the checkpoint (on the CPU), with the page and one-sentence 4xx answers for bad requests."""
    api = DigitAPI(str(ckpt_path), max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    # fast_queue: LitServe's ZeroMQ queues (IPC sockets) instead of a multiprocessing manager's; measured here with
    # 16 clients, p99 fell from about 60-100 ms to 35-40 ms (benchmarks/serve_load.py).
    server = ls.LitServer(api, accelerator="cpu", max_payload_size=MAX_BODY_BYTES, fast_queue=True)
    server.app.add_exception_handler(RequestValidationError, refuse_request)
    server.app.add_exception_handler(413, refuse_large_body)  # LitServe's size limit says only "Payload too large"
    for url, (name, media_type) in PAGE_FILES.items():
        send = page_file((PAGE_FOLDER / name).read_bytes(), media_type)
        server.app.add_api_route(url, send, methods=["GET", "HEAD"], include_in_schema=False)
    return server


def page_file(content: bytes, media_type: str):
    async def send() -> Response:
        return Response(content, media_type=media_type, headers={"Content-Security-Policy": PAGE_POLICY})

    return send


async def refuse_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """One sentence for a body that is not JSON, lacks `image` or holds no usable picture (never echoes the input)."""
    first = error.errors()[0]
    kind, field = first.get("type"), ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
    if kind == "json_invalid":
        status, detail = 400, f"the body is not JSON; send {REQUEST_EXAMPLE}"
    elif kind in ("model_attributes_type", "dict_type"):
        status, detail = 400, f"the body must be a JSON object (Content-Type: application/json): {REQUEST_EXAMPLE}"
    elif kind == "missing":
        status, detail = 422, f"no '{field}' field in the body; send {REQUEST_EXAMPLE}"
    elif kind == "value_error":
        status, detail = 422, str(first.get("ctx", {}).get("error", first.get("msg")))
    else:
        status, detail = 422, f"{field}: {first.get('msg')}; send {REQUEST_EXAMPLE}"
    return JSONResponse(status_code=status, content={"detail": detail})


async def refuse_large_body(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content={
            "detail": f"the body is over {MAX_BODY_BYTES:,} bytes; send a smaller picture (a digit needs a few KB)"
        },
    )
