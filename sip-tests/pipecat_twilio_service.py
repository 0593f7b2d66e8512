#!/usr/bin/env python3
"""A Pipecat-style Twilio Media Streams service, for Siphon's "twilio" fork interop test.

    pipecat_twilio_service.py --listen 127.0.0.1:8094 --result RESULT.json [--calls N]
                              [--pcm-dir DIR] [--timeout SECONDS]

It does what a Pipecat bot's entry point does with a telephony WebSocket, using Pipecat's
own code (PyPI pipecat-ai; the test pins 1.14.0) and not a re-implementation of the
protocol:

- `pipecat.runner.utils.parse_telephony_websocket` reads the first messages and detects the
  provider ("twilio") and the call data (stream_id, call_id, body = customParameters). It
  expects a FastAPI/Starlette WebSocket; `TextSocket` below gives the `websockets`
  connection the `iter_text()` it uses.
- `pipecat.serializers.twilio.TwilioFrameSerializer(stream_sid, params=...)` is built as a
  bot builds it (auto_hang_up off: there is no Twilio REST API to call) and set up with a
  `FrameProcessorSetup`, as the pipeline does before the first frame.
- Every further message goes through `serializer.deserialize()`, as Pipecat's WebSocket
  input transport does. An `InputAudioRawFrame` is counted, kept, and echoed back through
  `serializer.serialize(OutputAudioRawFrame(...))`, whose text is sent to Siphon; an
  `InputDTMFFrame` is counted.

The result file (JSON, rewritten whenever a call ends or sends Twilio's `stop`) holds one
record per WebSocket connection: the detected transport, stream_id, call_id, the
customParameters, frames and PCM bytes received, frames echoed, DTMF digits, the events
seen on the wire, and the close code. With --pcm-dir, each call's received PCM (16-bit
LE, 8 kHz mono, as Pipecat delivered it) is written to DIR/<n>.pcm. The process exits once
--calls connections have ended (0 = serve until killed), or after --timeout seconds.
"""
import argparse
import asyncio
import json
import os
import sys
import time

import websockets
from websockets.asyncio.server import serve

from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.utils.asyncio.task_manager import TaskManager

SAMPLE_RATE = 8000  # Twilio media streams are 8 kHz; the "pipeline" runs at 8 kHz too.


class TextSocket:
    """The part of a Starlette WebSocket that parse_telephony_websocket uses: iter_text().

    Each call returns an iterator over the same connection, so the messages after the ones
    parse_telephony_websocket consumed come from a later iter_text(), as they would in
    Starlette. Every message is also noted (its event name) for the result file."""

    def __init__(self, ws, record):
        self._ws = ws
        self._record = record

    async def iter_text(self):
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    # Starlette's iter_text() would fail on a binary frame; Twilio sends none.
                    self._record["binary_messages"] += 1
                    continue
                try:
                    event = json.loads(message).get("event", "?")
                except (ValueError, AttributeError):
                    event = "<not json>"
                events = self._record["events"]
                events[event] = events.get(event, 0) + 1
                if event == "stop":
                    self._record["stop_received"] = True
                yield message
        except websockets.ConnectionClosed:
            return


class Service:
    def __init__(self, args):
        self.args = args
        self.calls = []
        self.ended = 0
        self.done = asyncio.Event()
        self.task_manager = TaskManager()
        self.clock = SystemClock()

    def write_result(self):
        tmp = self.args.result + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"calls": self.calls}, f, indent=2)
        os.replace(tmp, self.args.result)

    async def handle(self, ws):
        index = len(self.calls)
        record = {
            "index": index,
            "path": ws.request.path if ws.request else None,
            "transport_type": None,
            "stream_id": None,
            "call_id": None,
            "custom_parameters": None,
            "frames": 0,
            "audio_bytes": 0,
            "sample_rates": [],
            "frames_echoed": 0,
            "echo_bytes": 0,
            "dtmf": "",
            "events": {},
            "binary_messages": 0,
            "stop_received": False,
            "close_code": None,
            "error": None,
            "duration_s": None,
        }
        self.calls.append(record)
        started = time.monotonic()
        pcm = bytearray()
        sock = TextSocket(ws, record)
        try:
            # A Pipecat bot's entry point: which provider is this, and which call?
            transport_type, call_data = await parse_telephony_websocket(sock)
            record["transport_type"] = transport_type
            record["stream_id"] = call_data["stream_id"]
            record["call_id"] = call_data["call_id"]
            record["custom_parameters"] = call_data.get("body", {})
            if transport_type != "twilio":
                raise RuntimeError(f"transport detected as {transport_type!r}, not twilio")

            serializer = TwilioFrameSerializer(
                call_data["stream_id"],
                call_sid=call_data["call_id"],
                params=TwilioFrameSerializer.InputParams(
                    auto_hang_up=False, sample_rate=SAMPLE_RATE
                ),
            )
            # What the pipeline hands every processor (and the transport its serializer)
            # before the first frame.
            await serializer.setup(
                FrameProcessorSetup(
                    clock=self.clock,
                    task_manager=self.task_manager,
                    pipeline_worker=None,
                    audio_in_sample_rate=SAMPLE_RATE,
                    audio_out_sample_rate=SAMPLE_RATE,
                )
            )

            # Pipecat's WebSocket input transport loop: deserialize every message.
            async for message in sock.iter_text():
                frame = await serializer.deserialize(message)
                if isinstance(frame, InputAudioRawFrame):
                    record["frames"] += 1
                    record["audio_bytes"] += len(frame.audio)
                    if frame.sample_rate not in record["sample_rates"]:
                        record["sample_rates"].append(frame.sample_rate)
                    pcm += frame.audio
                    # The bot "speaks" what it heard: the output transport serializes it.
                    out = await serializer.serialize(
                        OutputAudioRawFrame(
                            audio=frame.audio, sample_rate=SAMPLE_RATE, num_channels=1
                        )
                    )
                    if out is not None:
                        try:
                            await ws.send(out)
                        except websockets.ConnectionClosed:
                            break
                        record["frames_echoed"] += 1
                        record["echo_bytes"] += len(out)
                elif isinstance(frame, InputDTMFFrame):
                    record["dtmf"] += frame.button.value
                if record["stop_received"]:
                    # Twilio's stop: the stream is over. Note it now; the close follows.
                    record["duration_s"] = round(time.monotonic() - started, 3)
                    self.write_result()
        except Exception as e:  # recorded for the test, which reports it
            record["error"] = f"{type(e).__name__}: {e}"
        finally:
            try:
                await asyncio.wait_for(ws.wait_closed(), 5)
            except asyncio.TimeoutError:
                await ws.close()
            record["close_code"] = ws.close_code
            record["duration_s"] = round(time.monotonic() - started, 3)
            if self.args.pcm_dir:
                path = os.path.join(self.args.pcm_dir, f"{index}.pcm")
                with open(path, "wb") as f:
                    f.write(pcm)
                record["pcm_file"] = path
            self.write_result()
            self.ended += 1
            print(
                f"call {index}: {record['transport_type']} stream {record['stream_id']} "
                f"frames {record['frames']} bytes {record['audio_bytes']} "
                f"echoed {record['frames_echoed']} dtmf {record['dtmf']!r} "
                f"close {record['close_code']} error {record['error']}",
                flush=True,
            )
            if self.args.calls and self.ended >= self.args.calls:
                self.done.set()


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:8094")
    p.add_argument("--result", required=True)
    p.add_argument("--calls", type=int, default=1, help="exit after this many (0: never)")
    p.add_argument("--pcm-dir")
    p.add_argument("--timeout", type=float, default=0, help="exit after this long (0: never)")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    service = Service(args)
    service.write_result()
    async with serve(service.handle, host, int(port), max_size=2**20):
        print(f"listening on ws://{args.listen}/", flush=True)
        try:
            await asyncio.wait_for(service.done.wait(), args.timeout or None)
        except asyncio.TimeoutError:
            print(f"timeout after {args.timeout:g} s, {service.ended} call(s) ended", flush=True)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
