"""The LitServe side of `serve`: the `LitAPI` around the network, the routes, and how they are guarded.

LitServe keeps what it does well here: the inference worker process, dynamic batching, the queues, `/health`.
Two things it cannot do are done with FastAPI and uvicorn, which it builds on:

- `POST /predict` is our FastAPI route. LitServe's own route validates the body synchronously on the HTTP event
  loop and has no asynchronous step before a request enters its queue, and its `decode_request` runs in the
  inference worker, where one slow picture would hold every batch and a failing one fails the whole batch
  (LitServe issue 340). So the route hands the body to a pool of decoder processes (`decoding.PicturePool`: time
  and memory budgets, 503 when busy), then the prepared digit to LitServe's own request handler: the same queue,
  batching, worker and `encode_response` as LitServe's route.
- Limits on bodies and their times, security headers and the access log (`http_guard`): an ASGI middleware; the
  head size, connections and keep-alive: uvicorn's documented options, passed through `LitServer.run`.

Only what the service needs is served: `/predict`, `/health`, the page and its files; LitServe's `/`, `/info`
and FastAPI's `/docs`, `/redoc` and `/openapi.json` are not, and no redirect is built from the `Host` header.
"""

from __future__ import annotations

import base64
import contextlib
import signal
from pathlib import Path

import litserve as ls
import torch
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from litserve.server import RegularRequestHandler
from torch import Tensor
from torchvision.io import encode_png

from mnist_dense.constants import IMAGE_SIZE
from mnist_dense.deploy.decoding import PicturePool
from mnist_dense.deploy.http_guard import RequestGuard
from mnist_dense.deploy.inference import load_inference_model
from mnist_dense.deploy.limits import LIMITS, ServiceLimits

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
KEPT_ROUTES = ("/health",)  # of those LitServe registers


class DigitAPI(ls.LitAPI):
    """Prepared digits in (784 bytes each), each network's probabilities out; batched when max_batch_size > 1.

    One network per checkpoint, each loaded as `export` loads it (any network `MNISTClassifier` trained). With one,
    the answer is `{"digit", "probability", "probabilities", "score", "not_a_digit", "prepared"}`; with several,
    `{"answers": [{"network", "digit", "probability", "probabilities", "score", "not_a_digit"}, ...], "prepared"}`,
    in the order of the checkpoints. "not_a_digit" is true or false by the threshold `calibrate` set, null without.
    Module-level
    with plain attributes: LitServe pickles it into its worker process.
    """

    def __init__(
        self, ckpt_paths: list[str], names: list[str], max_batch_size: int = 16, batch_timeout: float = 0.005
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt_paths, self.names = ckpt_paths, names

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)  # one small matrix product a batch; more threads would fight the HTTP process
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops this worker
        self.models = [load_inference_model(Path(path)) for path in self.ckpt_paths]

    def decode_request(self, request: bytes) -> Tensor:
        return torch.frombuffer(bytearray(request), dtype=torch.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)

    @torch.inference_mode()
    def predict(self, digits: Tensor) -> list[tuple[Tensor, Tensor, Tensor]] | tuple[Tensor, Tensor, Tensor]:
        """(B, 28, 28) when batching (LitServe stacks the decoded requests), (28, 28) without; each digit with its
        (networks, 10) probabilities and (networks,) "not a digit" scores."""
        batch = digits.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        outputs = [model.answer(batch[:, None].float()) for model in self.models]
        probabilities = torch.stack([each for each, _ in outputs], dim=1)
        scores = torch.stack([score for _, score in outputs], dim=1)
        answers = list(zip(batch, probabilities, scores, strict=True))
        return answers if digits.dim() == 3 else answers[0]

    def encode_response(self, answer: tuple[Tensor, Tensor, Tensor]) -> dict:
        digit, probabilities, scores = answer
        picture = base64.b64encode(encode_png(digit[None]).numpy().tobytes()).decode()
        prepared = {"prepared": f"data:image/png;base64,{picture}"}  # the 28x28 picture the networks saw
        answers = [
            {
                "network": name,
                "digit": int(each.argmax()),
                "probability": round(float(each.max()), 6),
                "probabilities": [round(p, 6) for p in each.tolist()],
                **not_a_digit(float(score), model.threshold),
            }
            for name, each, score, model in zip(self.names, probabilities, scores, self.models, strict=True)
        ]
        if len(answers) == 1:
            del answers[0]["network"]
            return {**answers[0], **prepared}
        return {"answers": answers, **prepared}


def not_a_digit(score: float, threshold: float | None) -> dict:
    """The score behind the decision, and the decision: null where `calibrate` set no threshold."""
    return {"score": round(score, 4), "not_a_digit": None if threshold is None else score > threshold}


def build_server(
    ckpt_paths: Path | list[Path],
    names: list[str] | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.005,
    limits: ServiceLimits = LIMITS,
    behind_nginx: bool = False,
) -> ls.LitServer:
    """A LitServer for the checkpoints (on the CPU) with our `/predict`, the page, and the limits of `limits`.

    Several checkpoints are answered side by side, each under its name (`names`, in the same order). Run it with
    `server.run(..., **uvicorn_options(limits, behind_nginx))` so that uvicorn applies the limits on the HTTP level.
    `behind_nginx`: it listens only on the Unix socket that `serve --public`'s nginx connects to, so the client's
    address is the one nginx sets in X-Real-IP; otherwise it is the connection's peer, and that header is ignored.
    """
    paths = [str(path) for path in (ckpt_paths if isinstance(ckpt_paths, list) else [ckpt_paths])]
    names = names or [Path(path).stem for path in paths]
    api = DigitAPI(paths, names, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    # Not fast_queue=True: in LitServe 0.2.19 it has no effect (it passes `transport_config="zmq"` to a pydantic
    # model whose field is `transport_type`), so the queues are its multiprocessing manager's either way.
    server = ls.LitServer(api, accelerator="cpu", disable_openapi_url=True)
    server.uvicorn_graceful_timeout = limits.stop_grace_s  # LitServe passes it to uvicorn as its graceful shutdown
    app = server.app
    app.router.routes = [route for route in app.router.routes if getattr(route, "path", None) in KEPT_ROUTES]
    app.router.redirect_slashes = False  # Starlette would redirect /draw/ to a URL built from the Host header
    pool = PicturePool(limits)
    handler = RegularRequestHandler(api, server)

    async def predict(request: Request) -> Response:
        digit = await pool.prepare(await request.body(), client_of(request, behind_nginx))
        return JSONResponse(await handler.handle_request(digit, bytes))

    app.add_api_route(api.api_path, predict, methods=["POST"], dependencies=[Depends(server.setup_auth(api))])
    for url, (name, media_type) in PAGE_FILES.items():
        send = page_file((PAGE_FOLDER / name).read_bytes(), media_type)
        app.add_api_route(url, send, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/", lambda: RedirectResponse(PAGE_URL), methods=["GET", "HEAD"], include_in_schema=False)
    app.add_middleware(RequestGuard, limits=limits)
    litserve_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_):
        await pool.start()
        try:
            async with litserve_lifespan(app_):
                yield
        finally:
            await pool.stop()

    app.router.lifespan_context = lifespan
    return server


def client_of(request: Request, behind_nginx: bool) -> str:
    """The client's address, to which its pictures' decoding time is counted: behind nginx, the address nginx saw
    (it replaces any X-Real-IP a client sends); alone, the connection's peer."""
    if behind_nginx:
        return request.headers.get("x-real-ip", "-")
    return request.client.host if request.client else "-"


def uvicorn_options(limits: ServiceLimits = LIMITS, behind_nginx: bool = False) -> dict:
    """`LitServer.run`'s keyword arguments for uvicorn: its documented limits, and nothing uvicorn adds.

    Alone, uvicorn's h11 protocol, the one that bounds a request's head (httptools parses 64 MiB of headers); behind
    nginx, which bounds heads itself, the faster httptools.
    """
    head = (
        {"http": "auto"} if behind_nginx else {"http": "h11", "h11_max_incomplete_event_size": limits.max_header_bytes}
    )
    return {
        **head,
        "limit_concurrency": limits.max_connections,  # 503 beyond
        "backlog": limits.max_connections,
        "timeout_keep_alive": limits.keep_alive_s,
        "ws": "none",  # no websockets here
        "proxy_headers": False,  # X-Forwarded-For from a client on 127.0.0.1 would otherwise replace its address
        "server_header": False,
        "access_log": False,  # ours has the duration and the sizes
    }


def page_file(content: bytes, media_type: str):
    async def send() -> Response:
        return Response(content, media_type=media_type, headers={"Content-Security-Policy": PAGE_POLICY})

    return send
