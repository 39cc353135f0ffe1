"""Running one job: claim-holding, chunk by chunk, resumable, then assembling the file.

A `JobRunner` runs a job whose lease its worker holds. It:

1. reads the record and the chunks already committed (by any earlier run), so a
   resumed job starts from its last finished chunk;
2. sends the missing chunks to the model, at most `chunks_in_flight_per_job` of
   this job and `chunks_in_flight_total` of all jobs of the worker at once;
3. commits each finished chunk's audio as it arrives, and counts it in the record;
4. renews the lease every third of its term, and stops as soon as the lease is
   lost or the record says paused, cancelled or deleted;
5. when every chunk is done, streams them into the final file; if any chunk failed,
   marks the job failed with the failed chunks listed, keeping the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.audio.watermark import WATERMARK_NAME, load_watermarker
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, VoicePrompt
from chatterbox_serve.errors import ChatterboxError, ClientError
from chatterbox_serve.jobs.assembly import assemble, chunk_wav
from chatterbox_serve.jobs.records import ChunkCommit, JobPlan, JobRecord, JobState, Lease
from chatterbox_serve.jobs.store import JobGone, JobStore, StaleUpdate
from chatterbox_serve.speech.plan import chunk_request
from chatterbox_serve.speech.transfer import Submit, send_detached

logger = logging.getLogger(__name__)

# (voice key, whether it names a voice id only) -> the voice's prompt.
ResolveVoice = Callable[[str | None, bool], VoicePrompt | None]


@dataclass
class RunReport:
    """What one run did, for metrics and tests."""

    job_id: str
    outcome: str = "stopped"
    chunks_done: int = 0
    chunks_failed: int = 0
    seconds: float = 0.0


@dataclass
class _Run:
    record: JobRecord
    plan: JobPlan
    lease: Lease
    # Every chunk's engine request but its text, index and token budget.
    template: SynthesisRequest
    began: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    failures: dict[int, str] = field(default_factory=dict)
    report: RunReport = field(default_factory=lambda: RunReport(""))


class JobRunner:
    """Runs jobs of one worker; `total_slots` bounds chunks in flight across its jobs."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        submit: Submit,
        resolve_voice: ResolveVoice,
        *,
        holder: str,
        on_chunk: Callable[[str], None] | None = None,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self.store = store
        self.settings = settings
        self.submit = submit
        self.resolve_voice = resolve_voice
        self.holder = holder
        self.total_slots = asyncio.Semaphore(settings.jobs.chunks_in_flight_total)
        self.on_chunk = on_chunk or (lambda outcome: None)
        self.retry_backoff_s = retry_backoff_s

    async def run(self, job_id: str, lease: Lease) -> RunReport:
        """Run a job whose lease we hold, until it finishes or must stop; never raises
        for the job's own failures, which end up in its record."""
        began = time.monotonic()
        report = RunReport(job_id)
        try:
            report = await self._run(job_id, lease, report)
        except JobGone:
            report.outcome = "deleted"
        finally:
            report.seconds = time.monotonic() - began
        return report

    async def _run(self, job_id: str, lease: Lease, report: RunReport) -> RunReport:
        record = await asyncio.to_thread(self.store.get, job_id)
        if record is None:
            raise JobGone(job_id)
        if not record.state.runnable:
            await asyncio.to_thread(self.store.release, lease, job_id)
            report.outcome = record.state.value
            return report
        limit = self.settings.jobs.max_attempts
        plan = await asyncio.to_thread(self.store.plan, job_id)
        done = await asyncio.to_thread(self.store.commits, job_id, record.generation)
        if record.attempts >= limit:
            last = record.error or "no recorded error (its worker stopped or was lost)"
            # The chunks a retry would make: none where only the assembly kept failing.
            unmade = {i: "not made" for i in range(len(plan.chunks)) if i not in done}
            await self._finish_failed(
                job_id, unmade, f"Gave up after {record.attempts} attempts; the last: {last}"
            )
            await asyncio.to_thread(self.store.release, lease, job_id)
            report.outcome = "failed"
            return report
        try:
            params = record.parameters
            # Pinned by id where the job was created with a stored voice.
            pinned = params.voice_id is not None
            prompt = self.resolve_voice(
                params.voice_id if pinned else params.voice, pinned or params.voice_by_id
            )
        except ChatterboxError as exc:
            await self._finish_failed(job_id, {}, exc.message)
            await asyncio.to_thread(self.store.release, lease, job_id)
            report.outcome = "failed"
            return report
        now = self.store.clock()
        try:
            record = await asyncio.to_thread(
                self.store.update, job_id, lambda r: _start(r, now, done, plan)
            )
        except StaleUpdate as exc:
            await asyncio.to_thread(self.store.release, lease, job_id)
            report.outcome = str(exc)
            return report
        template = SynthesisRequest(
            text="",
            language=record.parameters.language,
            voice=prompt,
            generation=record.parameters.generation,
            request_id=f"job-{job_id}",
            family=record.parameters.model,
        )
        run = _Run(record, plan, lease, template, time.monotonic(), report=report)
        todo = deque(i for i in range(len(plan.chunks)) if i not in done)
        # The lease is renewed until the final record is written, final assembly
        # included: a lease lapsing mid-assembly let every other worker assemble again.
        heartbeat = asyncio.create_task(self._heartbeat(run, job_id))
        try:
            await self._drain(run, job_id, todo)
            if run.stop.is_set():
                if run.report.outcome != "lost":
                    await asyncio.to_thread(self.store.release, run.lease, job_id)
                return run.report
            # The marker's token is read before the final state is written, so a retry
            # that re-queues the job after that write keeps its marker.
            token = await asyncio.to_thread(self.store.queue_token, job_id)
            if run.failures:
                await self._finish_failed(job_id, run.failures, None)
                run.report.outcome = "failed"
            else:
                try:
                    run.report.outcome = await self._complete(run, job_id)
                except Exception as exc:  # disk full, over the WAV size limit, ...
                    # Noted in the record and left queued: the next run tries again, and
                    # the attempt limit turns a lasting cause into a failed job.
                    await self._note_error(job_id, f"final assembly failed: {exc!r}")
                    run.report.outcome, token = "assembly failed", None
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if token is not None:
            await asyncio.to_thread(self.store.dequeue, job_id, token)
        await asyncio.to_thread(self.store.release, run.lease, job_id)
        return run.report

    async def _drain(self, run: _Run, job_id: str, todo: deque[int]) -> None:
        lanes = self.settings.jobs.chunks_in_flight_per_job
        workers = [asyncio.create_task(self._lane(run, job_id, todo)) for _ in range(lanes)]
        stopper = asyncio.create_task(run.stop.wait())
        try:
            pending: set[asyncio.Task[object]] = {*workers, stopper}
            while any(not w.done() for w in workers):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    break
                for task in done:
                    task.result()  # a lane's unexpected error ends the run loudly
        finally:
            for task in (*workers, stopper):
                task.cancel()
            await asyncio.gather(*workers, stopper, return_exceptions=True)

    async def _lane(self, run: _Run, job_id: str, todo: deque[int]) -> None:
        while todo and not run.stop.is_set():
            index = todo.popleft()
            await self._chunk(run, job_id, index)

    async def _chunk(self, run: _Run, job_id: str, index: int) -> None:
        text = run.plan.chunks[index]
        request = chunk_request(run.template, index, text, self.settings)
        started = self.store.clock()
        attempts = self.settings.jobs.chunk_attempts
        for attempt in range(1, attempts + 1):
            try:
                result = await self._synthesize(request)
            except ClientError as exc:
                self._failed(run, index, exc.message)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("job %s chunk %d attempt %d: %r", job_id, index, attempt, exc)
                if attempt == attempts:
                    name = type(exc).__name__
                    self._failed(
                        run, index, exc.message if isinstance(exc, ChatterboxError) else name
                    )
                    return
                await asyncio.sleep(min(self.retry_backoff_s * 2**attempt, 10.0))
                continue
            await self._commit(run, job_id, index, text, started, result)
            return

    async def _synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        async with self.total_slots:
            # A job's chunks name the voice by sha256; only where the model replica
            # lacks it does the audio travel, so a long job sends it about once.
            call = send_detached(self.submit, request)
            try:
                result = await call
            finally:
                call.cancel()
        if not isinstance(result, SynthesisResult):
            raise TypeError(f"engine returned {type(result).__name__}")
        return result

    def _failed(self, run: _Run, index: int, message: str) -> None:
        run.failures[index] = message
        run.report.chunks_failed += 1
        self.on_chunk("failed")

    async def _commit(
        self, run: _Run, job_id: str, index: int, text: str, started: float, r: SynthesisResult
    ) -> None:
        marked = self.settings.audio.watermarked
        wav = await asyncio.to_thread(_chunk_file, r, marked)
        commit = ChunkCommit(
            index=index,
            audio_key="",
            samples=len(r.audio),
            sample_rate=r.sample_rate,
            chars=len(text),
            started_at=started,
            completed_at=self.store.clock(),
            extra={
                "batch_size": r.batch_size,
                "engine_s": round(r.engine_s, 4),
                **({"watermark": WATERMARK_NAME} if marked else {}),
            },
        )
        why = self._superseded(run, await asyncio.to_thread(self.store.get, job_id))
        if why is not None:  # never commit a chunk made with a superseded run's parameters
            run.report.outcome = why
            run.stop.set()
            return
        new = await asyncio.to_thread(
            self.store.commit_chunk, job_id, run.record.generation, commit, wav
        )
        if not new:
            return
        run.report.chunks_done += 1
        self.on_chunk("done")
        active = run.record.active_s + (time.monotonic() - run.began)
        now = self.store.clock()

        def count(rec: JobRecord) -> JobRecord:
            return rec.touched(
                now,
                completed_chunks=min(rec.total_chunks, rec.completed_chunks + 1),
                completed_chars=rec.completed_chars + len(text),
                audio_s=rec.audio_s + commit.duration_s,
                active_s=active,
                current_chunk=index,
            )

        latest = await asyncio.to_thread(self.store.update, job_id, count)
        if not latest.state.runnable:
            run.report.outcome = latest.state.value
            run.stop.set()

    async def _note_error(self, job_id: str, message: str) -> None:
        logger.warning("job %s: %s", job_id, message)
        now = self.store.clock()
        await asyncio.to_thread(
            self.store.update, job_id, lambda r: r.touched(now, error=message[:500])
        )

    @staticmethod
    def _superseded(run: _Run, record: JobRecord | None) -> str | None:
        """Why this run must stop, judging by the current record; None to go on.

        A retry (which may follow a cancel before this run noticed it) makes the job
        runnable again with new parameters: this run's are stale, so it stops and
        the retry's own run takes over.
        """
        if record is None:
            return "deleted"
        if record.retry_count != run.record.retry_count:
            return "superseded"
        return None if record.state.runnable else record.state.value

    async def _heartbeat(self, run: _Run, job_id: str) -> None:
        ttl = self.settings.jobs.lease_s
        while True:
            await asyncio.sleep(ttl / 3)
            renewed = await asyncio.to_thread(self.store.renew, run.lease, job_id, ttl)
            if renewed is None:
                logger.warning("job %s: lease lost; stopping this run", job_id)
                run.report.outcome = "lost"
                run.stop.set()
                return
            run.lease = renewed
            record = await asyncio.to_thread(self.store.get, job_id)
            why = self._superseded(run, record)
            if why is not None:
                run.report.outcome = why
                run.stop.set()
                return

    async def _complete(self, run: _Run, job_id: str) -> str:
        record = run.record
        params = record.parameters
        commits_map = await asyncio.to_thread(self.store.commits, job_id, record.generation)
        commits = [commits_map[i] for i in range(len(run.plan.chunks))]
        fmt = AudioFormat(params.response_format)
        key = self.store.output_key(job_id, record.generation, fmt.value)
        audio_cfg = self.settings.audio

        def write() -> tuple[int, float]:
            with self.store.output_writer(key) as writer:
                out = assemble(
                    commits,
                    self.store.chunk_audio,
                    writer,
                    fmt,
                    speed=params.speed,
                    crossfade_ms=audio_cfg.crossfade_ms,
                    mp3_bitrate_kbps=audio_cfg.mp3_bitrate_kbps,
                )
            return out.size_bytes, out.duration_s

        size, duration = await asyncio.to_thread(write)
        marks = {c.extra.get("watermark") for c in commits}
        watermark = marks.pop() if len(marks) == 1 else None
        active = record.active_s + (time.monotonic() - run.began)
        now = self.store.clock()

        def complete(rec: JobRecord) -> JobRecord:
            if not rec.state.runnable:
                raise StaleUpdate(rec.state.value)
            return rec.touched(
                now,
                state=JobState.COMPLETED,
                completed_chunks=rec.total_chunks,
                completed_chars=rec.total_chars,
                current_chunk=None,
                output_key=key,
                output_size_bytes=size,
                output_duration_s=round(duration, 3),
                output_watermark=watermark,
                processing_completed_at=now,
                active_s=active,
                error=None,
            )

        try:
            await asyncio.to_thread(self.store.update, job_id, complete)
        except (StaleUpdate, JobGone) as exc:
            await asyncio.to_thread(self.store.blobs.delete, key)
            return "deleted" if isinstance(exc, JobGone) else str(exc)
        if active > 0:
            await asyncio.to_thread(self.store.record_throughput, record.total_chars / active)
        await asyncio.to_thread(self.store.drop_unreferenced_audio, job_id, record.generation)
        return "completed"

    async def _finish_failed(
        self, job_id: str, failures: dict[int, str], error: str | None
    ) -> None:
        now = self.store.clock()
        if error is None:
            first = min(failures)
            error = f"chunk {first} failed: {failures[first]}"
        message = error

        def fail(rec: JobRecord) -> JobRecord:
            if not rec.state.runnable:
                raise StaleUpdate(rec.state.value)
            return rec.touched(
                now,
                state=JobState.FAILED,
                failed_chunks=tuple(sorted(failures)),
                current_chunk=None,
                error=message,
                processing_completed_at=now,
            )

        with contextlib.suppress(StaleUpdate):
            await asyncio.to_thread(self.store.update, job_id, fail)


def _start(rec: JobRecord, now: float, done: dict[int, ChunkCommit], plan: JobPlan) -> JobRecord:
    if not rec.state.runnable:
        raise StaleUpdate(rec.state.value)
    return replace(
        rec,
        updated_at=now,
        state=JobState.PROCESSING,
        processing_started_at=rec.processing_started_at or now,
        completed_chunks=len(done),
        completed_chars=sum(len(plan.chunks[i]) for i in done),
        audio_s=sum(c.duration_s for c in done.values()),
        failed_chunks=(),
        attempts=rec.attempts + 1,
    )


def _chunk_file(result: SynthesisResult, watermark: bool) -> bytes:
    """The stored form of a chunk: the engine's audio, watermarked as a speech chunk is."""
    audio = result.audio
    if watermark:
        audio = load_watermarker().apply(audio, result.sample_rate)
    return chunk_wav(audio, result.sample_rate)
