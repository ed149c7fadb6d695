"""vLLM's OpenAI-compatible HTTP server, backed by ``perf.Engine`` running in real time.

One asyncio task steps the engine while there is work, sleeping each step's modelled duration
(divided by the time scale); HTTP handlers queue requests and read their tokens as steps deliver
them.  Latencies are recorded in emulated seconds (a step's modelled duration), so metrics look
like a GPU's whatever the time scale; request *rates* seen by Prometheus are per wall-clock second.

Endpoints: ``GET /health`` (503 until the simulated model load is over), ``GET /v1/models``,
``GET /version``, ``POST /v1/completions`` and ``POST /v1/chat/completions`` (with ``stream``),
``GET /metrics``; with ``VLLM_SERVER_DEV_MODE=1`` the sleep-mode endpoints
(``sleep.py``).  The emulator-only request field ``prompt_kind`` (or header
``X-SpecOps-Prompt-Kind``) says what the prompt is: chat (default), summarization or code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from specops.vllm.dialect import format_version
from specops_testkit.emulator import sleep as sleep_mode
from specops_testkit.emulator.args import ServingConfig, StartupError
from specops_testkit.emulator.metrics import MetricSet, VLLMMetrics
from specops_testkit.emulator.perf import (
    Engine,
    FinishReason,
    Progress,
    PromptKind,
    Request,
    sample_eos_after,
)

log = logging.getLogger("specops_testkit.emulator")

ENV_HOST = "SPECOPS_EMULATOR_HOST"
ENV_TIME_SCALE = "SPECOPS_EMULATOR_TIME_SCALE"
ENV_LOAD_SECONDS = "SPECOPS_EMULATOR_LOAD_SECONDS"
ENV_SEED = "SPECOPS_EMULATOR_SEED"
PROMPT_KIND_HEADER = "X-SpecOps-Prompt-Kind"

# Rough tokenizer: about four characters per token, plus the chat template's few per message.
CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TEMPLATE_TOKENS = 3
# OpenAI's (and vLLM's) default max_tokens for /v1/completions; chat defaults to the rest of the context.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
_FILLER = (
    " the", " model", " writes", " filler", " text", " while", " the", " emulator", " keeps",
    " time", " like", " a", " GPU", " would", ",", " one", " token", " at", " a", " step", ".",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The SPECOPS_EMULATOR_* knobs that are not vLLM arguments."""

    host: str = "127.0.0.1"
    time_scale: float = 1.0
    load_seconds: float = 1.0
    seed: int = 0
    dev_mode: bool = False  # VLLM_SERVER_DEV_MODE: registers /sleep, /wake_up, /is_sleeping
    gpu_ledger: str | None = None  # the file the engines sharing this pod's GPUs account in

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_seed: int | None = None) -> ServerSettings:
        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise StartupError(f"{name} must be a number, got {raw!r}") from None
            if not math.isfinite(value) or value < 0:
                raise StartupError(f"{name} must be a non-negative number, got {raw!r}")
            return value

        scale = number(ENV_TIME_SCALE, 1.0)
        if scale <= 0:
            raise StartupError(f"{ENV_TIME_SCALE} must be positive")
        seed_raw = env.get(ENV_SEED)
        try:
            seed = int(seed_raw) if seed_raw else (default_seed or 0)
        except ValueError:
            raise StartupError(f"{ENV_SEED} must be an integer, got {seed_raw!r}") from None
        return cls(
            host=env.get(ENV_HOST) or "127.0.0.1",
            time_scale=scale,
            load_seconds=number(ENV_LOAD_SECONDS, 1.0),
            seed=seed,
            dev_mode=sleep_mode.dev_mode(env),
            gpu_ledger=env.get(sleep_mode.ENV_GPU_LEDGER) or None,
        )


class BadRequestError(Exception):
    """A request vLLM would answer with an error body; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(slots=True)
class _Pending:
    """A request in flight and the queue its tokens arrive on (None marks the end)."""

    request: Request
    tokens: asyncio.Queue[Progress | None] = field(default_factory=asyncio.Queue)


def _error(message: str, status: int, kind: str = "BadRequestError") -> web.Response:
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


def _filler(start: int, count: int) -> str:
    return "".join(_FILLER[(start + i) % len(_FILLER)] for i in range(count))


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Emulator:
    """The engine loop and the HTTP application around it."""

    def __init__(self, config: ServingConfig, settings: ServerSettings) -> None:
        self.config = config
        self.settings = settings
        self.engine = Engine(config.engine)
        self.engine_rng = random.Random(settings.seed)
        self.request_rng = random.Random(settings.seed + 1)
        self.metrics = VLLMMetrics(
            MetricSet(config.version, config.v0_engine, config.args.speculative is not None),
            config.served_model_name,
            config.num_speculative_tokens,
        )
        self._pending: dict[int, _Pending] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._started_wall = 0.0
        self._last_end = 0.0
        self.sleep_state = sleep_mode.SleepState()
        self._sleep_lock = asyncio.Lock()
        self._admit = asyncio.Event()  # set whenever new requests may enter the engine
        self._admit.set()
        self.ledger = (
            sleep_mode.GpuLedger(settings.gpu_ledger, sleep_mode.engine_key(config))
            if settings.gpu_ledger
            else None
        )
        self.app = self._build_app()

    # -- clock --------------------------------------------------------------------------------

    def now(self) -> float:
        """Emulated seconds since start: wall time multiplied by the time scale."""
        return (time.monotonic() - self._started_wall) * self.settings.time_scale

    @property
    def loaded(self) -> bool:
        return time.monotonic() - self._started_wall >= self.settings.load_seconds

    # -- engine loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._steps()
        except Exception:  # a bug: say so loudly rather than leave clients waiting in silence
            log.exception("engine loop crashed")
            raise

    async def _steps(self) -> None:
        while True:
            if not self.engine.has_work or self.sleep_state.paused:
                # Asleep or paused, vLLM queues new requests and steps nothing (0.32: PAUSED_NEW).
                self._wake.clear()
                await self._wake.wait()
                continue
            start = max(self.now(), self._last_end)
            result = self.engine.step(self.engine_rng, start)
            await asyncio.sleep(result.duration / self.settings.time_scale)
            self._last_end = result.end
            self.metrics.observe_step(result)
            for p in result.progress:
                pending = self._pending.get(id(p.request))
                if pending is not None:
                    pending.tokens.put_nowait(p)
            for r in result.finished:
                pending = self._pending.pop(id(r), None)
                if pending is not None:
                    pending.tokens.put_nowait(None)

    def submit(self, request: Request) -> _Pending:
        request.arrival = self.now()
        self.engine.add(request)  # raises ValueError for a request vLLM would refuse
        pending = _Pending(request)
        self._pending[id(request)] = pending
        self.metrics.set_queue(len(self.engine.running), len(self.engine.waiting), self.engine.kv_usage)
        self._wake.set()
        return pending

    def abort(self, pending: _Pending) -> None:
        self._pending.pop(id(pending.request), None)
        if self.engine.abort(pending.request, self.now()):
            self.metrics.observe_abort(pending.request)

    async def start(self, app: web.Application) -> None:
        self._started_wall = time.monotonic()
        self._loop_task = asyncio.create_task(self._run(), name="engine-loop")

    async def stop(self, app: web.Application) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    # -- HTTP ---------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        routes = sleep_mode.sleep_routes(self.config.version, self.settings.dev_mode)
        handlers = {"/sleep": self.sleep, "/wake_up": self.wake_up, "/is_sleeping": self.is_sleeping}
        for path in routes:
            if path == "/is_sleeping":
                app.router.add_get(path, handlers[path])
            else:
                app.router.add_post(path, handlers[path])
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Until the model has "loaded" only /health answers, and it answers 503."""
        if not self.loaded:
            return _error("the model is still loading", 503, "ServiceUnavailableError")
        try:
            response: web.StreamResponse = await handler(request)
        except BadRequestError as exc:
            return _error(str(exc), exc.status, exc.kind)
        return response

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)  # asleep too: /health fails only on a dead engine

    # -- sleep mode (docs/emulator.md, "Sleep mode") ---------------------------------------------

    def _sleep_query(self, request: web.Request) -> tuple[int, str]:
        """``level`` and ``mode`` as this release reads them (0.32: validated, 422)."""
        v2 = self.config.version >= sleep_mode.SLEEP_API_V2_SINCE
        raw_level = request.query.get("level", "1")
        raw_mode = (
            request.query.get("mode", "abort") if sleep_mode.has_pause_mode(self.config.version) else "abort"
        )
        try:
            level = int(raw_level)
        except ValueError:
            level = -1
        if v2 and (not 0 <= level <= 2 or raw_mode not in sleep_mode.PAUSE_MODES):
            raise BadRequestError(f"invalid sleep query: level={raw_level!r} mode={raw_mode!r}", 422)
        if level not in (1, 2) and not (v2 and level == 0):
            raise BadRequestError(
                f"invalid literal for sleep level: {raw_level!r}", 500, "InternalServerError"
            )
        if raw_mode not in sleep_mode.PAUSE_MODES:
            raise BadRequestError(f"Invalid pause mode: {raw_mode}", 500, "InternalServerError")
        return level, raw_mode

    async def _switch_pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.settings.time_scale)

    async def sleep(self, request: web.Request) -> web.Response:
        level, mode = self._sleep_query(request)
        if not self.config.args.enable_sleep_mode and level >= 1:
            raise BadRequestError(
                "Sleep mode is not enabled: start vLLM with --enable-sleep-mode", 500, "InternalServerError"
            )
        async with self._sleep_lock:
            state = self.sleep_state
            if "weights" not in state.asleep_tags:
                state.holding = True  # new requests queue from now on
                if mode == "wait":
                    while self.engine.has_work:  # in-flight requests finish
                        await asyncio.sleep(0.01)
                elif mode == "abort":
                    for pending in list(self._pending.values()):
                        self.abort(pending)
                        pending.tokens.put_nowait(None)
                state.paused = True  # "keep": in-flight requests stay, unstepped, until wake
                if level >= 1:
                    moved = sleep_mode.weights_gib_total(self.config) if level == 1 else 0.0
                    await self._switch_pause(sleep_mode.switch_seconds(moved, level))
                    state.asleep_tags = set(sleep_mode.TAGS)
                    state.level = level
                    state.weights_discarded = level == 2
                    if self.ledger is not None:
                        total = self.config.memory.inputs.gpu_memory_gib
                        self.ledger.claim(total, sleep_mode.asleep_gib(self.config), "{need}")
                log.info("asleep at level %d (mode %s)", level, mode)
        if self.config.version >= sleep_mode.SLEEP_API_V2_SINCE:
            return web.json_response({"status": "sleeping", "level": level})
        return web.Response(status=200)

    async def wake_up(self, request: web.Request) -> web.Response:
        tags: list[str] | None = None
        if sleep_mode.has_wake_tags(self.config.version):
            tags = request.query.getall("tags", []) or None
        async with self._sleep_lock:
            state = self.sleep_state
            waking = set(sleep_mode.TAGS) if tags is None else {t for t in tags if t in sleep_mode.TAGS}
            waking &= state.asleep_tags
            if waking:
                remaining = state.asleep_tags - waking
                # Per GPU afterwards: the whole share when fully awake, else the residual plus the
                # weights when only they come back (the KV cache stays released).
                need = sleep_mode.asleep_gib(self.config)
                if not remaining:
                    need = sleep_mode.awake_gib(self.config)
                elif "weights" in waking:
                    need += self.config.memory.weights_gib
                if self.ledger is not None:
                    try:
                        self.ledger.claim(
                            self.config.memory.inputs.gpu_memory_gib,
                            need,
                            "CUDA out of memory: waking needs {need:.2f} GiB per GPU; {free:.2f} GiB "
                            "of {total:.2f} GiB are free",
                        )
                    except MemoryError as exc:
                        raise BadRequestError(str(exc), 500, "InternalServerError") from None
                level = state.level or 1
                moved = (
                    sleep_mode.weights_gib_total(self.config) if "weights" in waking and level == 1 else 0.0
                )
                await self._switch_pause(sleep_mode.switch_seconds(moved, level))
                state.asleep_tags = remaining
            if not state.asleep_tags and (state.paused or state.holding):
                # Scheduling resumes once all memory is resident again (0.32: fully awake).
                state.paused = state.holding = False
                state.level = None
                self._admit.set()
                self._wake.set()
            fully_awake = not state.sleeping
            log.info("wake_up tags=%s: %s", tags, "awake" if fully_awake else "still sleeping")
        if self.config.version >= sleep_mode.SLEEP_API_V2_SINCE:
            return web.json_response({"status": "awake" if fully_awake else "sleeping", "tags": tags})
        return web.Response(status=200)

    async def is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": self.sleep_state.sleeping})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": format_version(self.config.version)})

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.config.args.model,
                "parent": None,
                "max_model_len": self.config.engine.max_model_len,
            }
            for name in (self.config.args.served_model_names or (self.config.args.model,))
        ]
        return web.json_response({"object": "list", "data": data})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_tokens = _estimate_tokens(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_tokens = len(prompt)
        else:
            raise BadRequestError("prompt must be a string or a list of token ids (one prompt per request)")
        max_tokens = self._max_tokens(body, "max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS, prompt_tokens)
        return await self._serve(request, body, prompt_tokens, max_tokens, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequestError("messages must be a non-empty list of {role, content} objects")
        text_tokens = sum(_estimate_tokens(_message_text(m.get("content"))) for m in messages)
        prompt_tokens = text_tokens + CHAT_TOKENS_PER_MESSAGE * len(messages) + CHAT_TEMPLATE_TOKENS
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = self._max_tokens(body, key, None, prompt_tokens)
        return await self._serve(request, body, prompt_tokens, max_tokens, chat=True)

    # -- request handling ---------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequestError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object")
        model = body.get("model")
        names = self.config.args.served_model_names or (self.config.args.model,)
        if model is not None and model not in names:
            raise BadRequestError(f"The model `{model}` does not exist.", 404, "NotFoundError")
        if body.get("n", 1) != 1:
            raise BadRequestError("the emulator serves n=1 only")
        return body

    def _max_tokens(self, body: Mapping[str, Any], key: str, default: int | None, prompt_tokens: int) -> int:
        value = body.get(key)
        if value is None:
            return (
                default if default is not None else max(1, self.config.engine.max_model_len - prompt_tokens)
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequestError(f"{key} must be a positive integer")
        return value

    def _prompt_kind(self, request: web.Request, body: Mapping[str, Any]) -> PromptKind:
        raw = body.get("prompt_kind") or request.headers.get(PROMPT_KIND_HEADER) or PromptKind.CHAT.value
        try:
            return PromptKind(str(raw).lower())
        except ValueError:
            kinds = ", ".join(k.value for k in PromptKind)
            raise BadRequestError(f"prompt_kind must be one of {kinds}, got {raw!r}") from None

    def _temperature(self, body: Mapping[str, Any]) -> float:
        value = body.get("temperature", 1.0)
        if value is None:
            return 1.0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadRequestError("temperature must be a non-negative number")
        return float(value)

    async def _serve(
        self, http: web.Request, body: dict[str, Any], prompt_tokens: int, max_tokens: int, *, chat: bool
    ) -> web.StreamResponse:
        kind = self._prompt_kind(http, body)
        request = Request(
            request_id=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            temperature=self._temperature(body),
            prompt_kind=kind,
            eos_after=None if body.get("ignore_eos") else sample_eos_after(self.request_rng, kind),
        )
        while self.sleep_state.holding:  # asleep or pausing: vLLM queues the request
            self._admit.clear()
            await self._admit.wait()
        try:
            pending = self.submit(request)
        except ValueError as exc:
            raise BadRequestError(str(exc)) from None
        if body.get("stream"):
            options = body.get("stream_options")
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return await self._stream(http, pending, chat=chat, include_usage=usage)
        return await self._complete(pending, chat=chat)

    def _usage(self, r: Request) -> dict[str, int]:
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.output_tokens,
            "total_tokens": r.prompt_tokens + r.output_tokens,
        }

    def _finish_reason(self, r: Request) -> str:
        return (r.finish_reason or FinishReason.LENGTH).value

    async def _complete(self, pending: _Pending, *, chat: bool) -> web.Response:
        r = pending.request
        try:
            while await pending.tokens.get() is not None:
                pass
        except asyncio.CancelledError:
            self.abort(pending)
            raise
        text = _filler(0, r.output_tokens)
        created = int(time.time())
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self._finish_reason(r),
                "stop_reason": None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self._finish_reason(r),
                "stop_reason": None,
            }
            obj = "text_completion"
        return web.json_response(
            {
                "id": r.request_id,
                "object": obj,
                "created": created,
                "model": self.config.served_model_name,
                "choices": [choice],
                "usage": self._usage(r),
            }
        )

    async def _stream(
        self, http: web.Request, pending: _Pending, *, chat: bool, include_usage: bool
    ) -> web.StreamResponse:
        r = pending.request
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(http)
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk: dict[str, Any] = {
                "id": r.request_id,
                "object": obj,
                "created": created,
                "model": self.config.served_model_name,
                "choices": choices,
            }
            if usage is not None:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

        sent = 0
        try:
            if chat:
                await send([choice("", None, first=True)])
            while (p := await pending.tokens.get()) is not None:
                text = _filler(sent, p.new_tokens)
                sent += p.new_tokens
                done = r.finished and sent >= r.output_tokens
                await send([choice(text, self._finish_reason(r) if done else None)])
            if include_usage:
                await send([], self._usage(r))
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.abort(pending)
            raise
        await response.write_eof()
        return response


async def serve(config: ServingConfig, settings: ServerSettings, stop: asyncio.Event) -> None:
    """Serve on ``settings.host``:``--port`` until ``stop`` is set."""
    emulator = Emulator(config, settings)
    runner = web.AppRunner(emulator.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, config.args.port)
    await site.start()
    log.info("listening on %s:%d", settings.host, config.args.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
