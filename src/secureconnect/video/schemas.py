"""Request and response shapes of the calls API (docs/api.md, "Calls").

SDP and ICE candidates pass through video-service to Janus and back; the server checks their
shape and size, never their meaning. Media is end-to-end encrypted: nothing here carries a key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict

MAX_SDP = 65536

CallState = Literal["ringing", "live", "ended"]
Outcome = Literal["ended", "missed", "declined"]
Media = Literal["audio", "video"]


class StartCall(Strict):
    conversation_id: str = Field(min_length=1, max_length=64)
    media: Media = "video"


class ParticipantOut(BaseModel):
    device_id: str
    user_id: str
    username: str
    feed_id: int | None = Field(description="Janus's publisher id, once the device publishes")
    publishing: bool
    audio: bool
    video: bool
    screen: bool
    joined_at: int


class CallOut(BaseModel):
    id: str
    conversation_id: str
    media: Media
    state: CallState
    outcome: Outcome | None
    caller: str
    created_at: int
    answered_at: int | None
    ended_at: int | None
    rings_until: int | None = Field(
        description="until when members who have not answered are rung (ms); none once ended"
    )
    sfu_epoch: int = Field(description="changes when the SFU restarted: rejoin if yours differs")
    version: int = Field(description="goes up with every change: ignore one older than yours")
    participants: list[ParticipantOut]
    declined: list[str]


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Jsep(Strict):
    type: Literal["offer", "answer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP)


class JoinOut(BaseModel):
    call: CallOut
    feed_id: int
    ice_servers: list[IceServer]
    e2ee: Literal["sframe"] = "sframe"


class Publish(Strict):
    jsep: Jsep
    audio: bool = True
    video: bool = True
    screen: bool = False


class JsepOut(BaseModel):
    jsep: Jsep


class Subscribe(Strict):
    feeds: list[int] = Field(max_length=64, description="the feed ids to receive, all of them")
    restart: bool = Field(
        False,
        description="a new subscriber connection: the client has none (a rejoin, one that"
        " never connected), so Janus's old one is dropped and a fresh offer made",
    )


class StreamOut(BaseModel):
    mid: str
    feed_id: int
    kind: str


class SubscribeOut(BaseModel):
    jsep: Jsep | None = Field(description="Janus's offer; none when nothing changed")
    streams: list[StreamOut]


class Answer(Strict):
    jsep: Jsep


class Candidate(Strict):
    candidate: str = Field(max_length=2048)
    sdpMid: str | None = Field(None, max_length=64)
    sdpMLineIndex: int | None = Field(None, ge=0, le=1024)


class Trickle(Strict):
    target: Literal["publisher", "subscriber"]
    candidate: Candidate | None = Field(description="none: gathering has completed")


class Configure(Strict):
    audio: bool | None = None
    video: bool | None = None
    screen: bool | None = None


class Keyframe(Strict):
    feed_id: int | None = Field(
        None, description="a feed you receive: ask its sender; none: ask your own encoder"
    )


class Layer(Strict):
    mid: str = Field(max_length=64)
    substream: int = Field(ge=0, le=2)


class DecryptFailures(Strict):
    frames: int = Field(ge=0, le=1_000_000, description="frames this device could not decrypt")


class Ok(BaseModel):
    ok: bool = True
