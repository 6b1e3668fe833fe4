"""Attachments through a real server: a file encrypted on one device opens on every other with
the same SHA-256, while the server keeps only ciphertext; only members fetch, only the uploader
changes or deletes; bad chunks, limits and quotas are refused clearly; what nobody can reach any
more is removed by itself; and the same works on S3-compatible storage (moto's server)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from secureconnect.client import ApiError, Client
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import SecureClient
from secureconnect.crypto import attachment as crypto
from tests.helpers import PASSWORD, signed_up, unique
from tests.server import ServerProcess, free_port

CHUNK = crypto.DEFAULT_CHUNK + crypto.TAG_BYTES


def file_with(marker: bytes, size: int) -> bytes:
    """Random bytes with the marker sprinkled through, to look for in what the server holds."""
    piece = marker + os.urandom(4096 - len(marker))
    return (piece * (size // len(piece) + 1))[:size]


@pytest.fixture
async def devices(tmp_path):
    made: list[Client] = []

    async def make(srv: ServerProcess, prefix: str) -> SecureClient:
        client = Client(srv.url)
        made.append(client)
        name = unique(prefix)
        await client.register(name, PASSWORD)
        await client.login(name, PASSWORD)
        secure = SecureClient(client, DeviceStore(tmp_path / f"{name}.json"))
        await secure.start()
        return secure

    yield make
    for client in made:
        await client.aclose()


async def refused(call) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as error:
        await call
    return error.value.status, error.value.code, error.value.message


async def test_a_file_opens_on_every_member_with_its_hash_and_the_server_keeps_ciphertext(
    devices, server, tmp_path
) -> None:
    alice, bob, carol = [await devices(server, p) for p in ("alice", "bob", "carol")]
    group = await alice.client.create_group([bob.username, carol.username])
    marker = f"zebra-{unique('file')}-umbrella".encode()
    data = file_with(marker, 2 * crypto.DEFAULT_CHUNK + 12345)  # three chunks, the last short
    path = tmp_path / "quarterly report.pdf"
    path.write_bytes(data)
    progress: list[tuple[int, int]] = []
    await alice.send_file(
        group.id, path, caption="the figures", progress=lambda d, t: progress.append((d, t))
    )
    assert progress == [
        (crypto.DEFAULT_CHUNK, len(data)),
        (2 * crypto.DEFAULT_CHUNK, len(data)),
        (len(data), len(data)),
    ]
    want = hashlib.sha256(data).hexdigest()
    for device in (bob, carol):
        entry = (await device.timeline(group.id))[-1]
        assert entry.attachment is not None
        assert (entry.attachment.name, entry.text) == ("quarterly report.pdf", "the figures")
        assert (entry.attachment.size, entry.attachment.type) == (len(data), "application/pdf")
        folder = tmp_path / device.username
        folder.mkdir()
        saved = await device.save_attachment(entry, folder)
        assert saved == folder / "quarterly report.pdf"
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == want
    held = server.held()
    for form in (marker, marker.hex().encode(), base64.b64encode(marker[:24])):
        assert form not in held
    assert data[:64] not in held
    usage = await alice.client.attachment_usage()
    assert usage.used_bytes == crypto.ciphertext_size(len(data), crypto.DEFAULT_CHUNK)


async def test_an_image_carries_a_thumbnail_without_its_metadata(devices, server, tmp_path) -> None:
    from PIL import Image

    alice, bob = await devices(server, "alice"), await devices(server, "bob")
    chat = await alice.client.direct(bob.username)
    photo = tmp_path / "holiday.jpg"
    exif = Image.Exif()
    exif[0x010F] = "CameraMakerThatMustNotLeak"  # Make
    Image.new("RGB", (1600, 900), (200, 30, 60)).save(photo, "JPEG", exif=exif)
    assert b"CameraMakerThatMustNotLeak" in photo.read_bytes()
    await alice.send_file(chat.id, photo)
    entry = (await bob.timeline(chat.id))[-1]
    pointer = entry.attachment
    assert pointer is not None and pointer.is_image
    assert (pointer.width, pointer.height, pointer.type) == (1600, 900, "image/jpeg")
    assert pointer.thumb is not None and b"CameraMakerThatMustNotLeak" not in pointer.thumb
    import io

    with Image.open(io.BytesIO(pointer.thumb)) as thumb:
        assert thumb.size == (320, 180)


async def test_only_members_fetch_and_only_the_uploader_changes_or_deletes(
    devices, server, tmp_path
) -> None:
    alice, bob, dave = [await devices(server, p) for p in ("alice", "bob", "dave")]
    group = await alice.client.create_group([bob.username])
    path = tmp_path / "plan.txt"
    path.write_bytes(b"the plan, in confidence")
    await alice.send_file(group.id, path)
    entry = (await bob.timeline(group.id))[-1]
    assert entry.attachment is not None
    blob = entry.attachment.blob
    # Someone outside: the attachment does not exist for them, whatever they try.
    for call in (
        dave.client.blob(blob),
        dave.client.delete_blob(blob),
        dave.client.put_chunk(blob, 0, b"x"),
        dave.client.create_blob(group.id, 100, CHUNK),
    ):
        status, code, _ = await refused(call)
        assert status == 404 and code in ("blob_not_found", "conversation_not_found")
    with pytest.raises(ApiError) as outside:
        async for _ in dave.client.blob_content(blob):
            pass
    assert (outside.value.status, outside.value.code) == (404, "blob_not_found")
    # A member fetches, but only the uploader deletes.
    assert (await bob.client.blob(blob)).complete
    assert await refused(bob.client.delete_blob(blob)) == (
        403,
        "not_uploader",
        "only who sent an attachment may delete it",
    )
    # Removed after it was sent: still theirs to open, as the message was.
    await alice.client.remove_member(group.id, bob.username)
    saved = await bob.save_attachment(entry, tmp_path / "plan-copy.txt")
    assert saved.read_bytes() == b"the plan, in confidence"
    # One sent after they were removed is not theirs.
    later = tmp_path / "later.txt"
    later.write_bytes(b"after bob left")
    await alice.send_file(group.id, later)
    latest = (await alice.timeline(group.id))[-1]
    assert latest.attachment is not None
    status, code, _ = await refused(bob.client.blob(latest.attachment.blob))
    assert (status, code) == (404, "blob_not_found")


async def test_deleting_for_everyone_removes_the_file(devices, server, tmp_path) -> None:
    alice, bob = await devices(server, "alice"), await devices(server, "bob")
    chat = await alice.client.direct(bob.username)
    path = tmp_path / "oops.txt"
    path.write_bytes(b"sent to the wrong person")
    sent = await alice.send_file(chat.id, path)
    entry = (await bob.timeline(chat.id))[-1]
    assert entry.attachment is not None
    await alice.delete_for_everyone(chat.id, sent.seq)
    after = next(e for e in await bob.timeline(chat.id) if e.message.seq == sent.seq)
    assert after.deleted and after.attachment is None
    status, code, _ = await refused(bob.client.blob(entry.attachment.blob))
    assert (status, code) == (404, "blob_not_found")
    assert not list((server.data_dir / "blobs").rglob(entry.attachment.blob))
    assert (await alice.client.attachment_usage()).used_bytes == 0


async def test_chunks_that_do_not_fit_are_refused_and_nothing_is_lost(user, server) -> None:
    alice = await user("alice")
    chat = await alice.create_group([], name="notes")
    size = CHUNK + 100
    blob = await alice.create_blob(chat.id, size, CHUNK)
    assert (blob.chunks, blob.received, blob.complete) == (2, [], False)
    await alice.put_chunk(blob.id, 1, b"b" * 100)
    assert await refused(alice.put_chunk(blob.id, 0, b"a" * 10)) == (
        400,
        "bad_chunk_length",
        f"chunk 0 must be {CHUNK} bytes; got 10",
    )
    status, code, _ = await refused(alice.put_chunk(blob.id, 2, b"c"))
    assert (status, code) == (400, "bad_chunk")
    assert await refused(alice.complete_blob(blob.id)) == (
        409,
        "chunks_missing",
        "chunks not received yet: 0",
    )
    assert (await alice.blob(blob.id)).received == [1]  # what resumes the upload
    await alice.put_chunk(blob.id, 0, b"a" * CHUNK)
    await alice.put_chunk(blob.id, 0, b"a" * CHUNK)  # a retry is harmless
    done = await alice.complete_blob(blob.id)
    assert (done.complete, done.received) == (True, [0, 1])
    status, code, _ = await refused(alice.put_chunk(blob.id, 1, b"z" * 100))
    assert (status, code) == (409, "blob_complete")
    body = b"".join([p async for p in alice.blob_content(blob.id)])
    assert body == b"a" * CHUNK + b"b" * 100
    # Shapes the schema refuses, each with a JSON error naming the field.
    headers = {"Authorization": f"Bearer {alice.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as raw:
        for bad in (
            {"conversation_id": chat.id, "size": 10, "chunk_size": 10},
            {"conversation_id": chat.id, "size": -1, "chunk_size": CHUNK},
            {"conversation_id": chat.id, "size": 2**63, "chunk_size": CHUNK},
        ):
            answer = await raw.post("/v1/blobs", json=bad)
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request"
        answer = await raw.put(f"/v1/blobs/{blob.id}/chunks/0", content=b"x" * (CHUNK + 5000))
        assert answer.status_code in (409, 413)  # complete, or over any chunk's size
        answer = await raw.put(f"/v1/blobs/{'0' * 32}/chunks/0", content=b"x" * (9 * 2**20))
        assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large")
        answer = await raw.get("/v1/blobs/not-an-id")
        assert answer.status_code == 422


async def test_limits_quota_and_what_is_collected_by_itself(own_server, devices, tmp_path) -> None:
    own_server.extra_env.update(
        {
            "SECURECONNECT_MAX_ATTACHMENT_BYTES": str(6 * 2**20),
            "SECURECONNECT_ATTACHMENT_QUOTA_BYTES": str(10 * 2**20),
            "SECURECONNECT_BLOB_UPLOAD_TTL_S": "2",
            "SECURECONNECT_BLOB_GC_INTERVAL_S": "0.5",
        }
    )
    own_server.start()
    alice, bob = await devices(own_server, "alice"), await devices(own_server, "bob")
    group = await alice.client.create_group([bob.username])
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(7 * 2**20))
    status, code, message = await refused(alice.send_file(group.id, big))
    assert (status, code) == (413, "attachment_too_large")
    assert str(6 * 2**20) in message
    five = tmp_path / "five.bin"
    five.write_bytes(os.urandom(5 * 2**20))
    await alice.send_file(group.id, five)
    status, code, message = await refused(alice.send_file(group.id, five))
    assert (status, code) == (413, "quota_exceeded")
    assert "delete some to make room" in message
    assert (await alice.client.attachment_usage()).used_bytes < 10 * 2**20  # nothing left over
    # An upload never completed is removed after the TTL.
    stalled = await alice.client.create_blob(group.id, 1000, CHUNK)
    await alice.client.put_chunk(stalled.id, 0, b"s" * 1000)
    await wait_until_gone(alice.client, stalled.id, own_server)
    # Once everyone has left, nobody may fetch the file: it goes.
    entry = (await bob.timeline(group.id))[-1]
    assert entry.attachment is not None
    await bob.client.remove_member(group.id, bob.username)
    await asyncio.sleep(1.5)
    assert (await alice.client.blob(entry.attachment.blob)).complete  # alice is still in
    await alice.client.remove_member(group.id, alice.username)
    await wait_until_gone(alice.client, entry.attachment.blob, own_server)
    assert (await alice.client.attachment_usage()).used_bytes == 0
    status, code, _ = await refused(bob.save_attachment(entry, tmp_path / "gone.bin"))
    assert (status, code) == (404, "blob_not_found")
    assert not (tmp_path / "gone.bin").exists() and not (tmp_path / "gone.bin.part").exists()


async def wait_until_gone(client: Client, blob_id: str, srv: ServerProcess) -> None:
    """Gone for the API, then from the disk: rows go first, their bytes a moment later."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await client.blob(blob_id)
        except ApiError as error:
            assert error.code == "blob_not_found"
            if not list((srv.data_dir / "blobs").rglob(blob_id)):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{blob_id} was not collected")


# ----- S3-compatible storage ---------------------------------------------------------------


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server on loopback: it speaks the S3 protocol as a real one does."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
async def test_attachments_on_s3_compatible_storage(s3_server, tmp_path, devices) -> None:
    from aiobotocore.session import get_session

    srv = ServerProcess(
        tmp_path / "server",
        {
            "SECURECONNECT_BLOB_STORE": "s3://attachments/sc",
            "SECURECONNECT_S3_ENDPOINT_URL": s3_server,
            "SECURECONNECT_S3_ACCESS_KEY_ID": "testing",
            "SECURECONNECT_S3_SECRET_ACCESS_KEY": "testing",
        },
    )
    srv.data_dir.mkdir()
    srv.start()
    try:
        alice, bob = await devices(srv, "alice"), await devices(srv, "bob")
        chat = await alice.client.direct(bob.username)
        marker = f"zebra-{unique('s3')}-umbrella".encode()
        data = file_with(marker, crypto.DEFAULT_CHUNK + 999)
        path = tmp_path / "on-s3.bin"
        path.write_bytes(data)
        sent = await alice.send_file(chat.id, path)
        entry = (await bob.timeline(chat.id))[-1]
        saved = await bob.save_attachment(entry, tmp_path / "from-s3.bin")
        assert saved.read_bytes() == data
        assert not (srv.data_dir / "blobs").exists()  # nothing went to the local folder
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=s3_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ) as s3:
            listed = await s3.list_objects_v2(Bucket="attachments", Prefix="sc/")
            keys = sorted(o["Key"] for o in listed["Contents"])
            assert entry.attachment is not None
            assert keys == [f"sc/{entry.attachment.blob}/0", f"sc/{entry.attachment.blob}/1"]
            stored = b""
            for key in keys:
                answer = await s3.get_object(Bucket="attachments", Key=key)
                async with answer["Body"] as stream:
                    stored += await stream.read()
            assert len(stored) == crypto.ciphertext_size(len(data), crypto.DEFAULT_CHUNK)
            assert marker not in stored
            await alice.delete_for_everyone(chat.id, sent.seq)
            listed = await s3.list_objects_v2(Bucket="attachments", Prefix="sc/")
            assert listed.get("KeyCount", 0) == 0
    finally:
        srv.stop()


@pytest.mark.slow  # a server of its own
async def test_storage_that_is_down_answers_503_and_keeps_what_was_accepted(tmp_path) -> None:
    srv = ServerProcess(
        tmp_path / "server",
        {
            "SECURECONNECT_BLOB_STORE": "s3://attachments",
            "SECURECONNECT_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing there
            "SECURECONNECT_S3_ACCESS_KEY_ID": "testing",
            "SECURECONNECT_S3_SECRET_ACCESS_KEY": "testing",
        },
    )
    srv.data_dir.mkdir()
    srv.start()
    try:
        async with Client(srv.url) as alice:
            await signed_up(alice, unique("alice"))
            chat = await alice.create_group([], name="notes")
            blob = await alice.create_blob(chat.id, 100, CHUNK)
            headers = {"Authorization": f"Bearer {alice.token}"}
            async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=60) as raw:
                started = time.monotonic()
                answer = await raw.put(f"/v1/blobs/{blob.id}/chunks/0", content=b"x" * 100)
            assert answer.status_code == 503
            assert time.monotonic() - started < 30  # bounded retries, not a hung upload
            assert answer.json()["error"]["code"] == "blob_store_unavailable"
            assert (await alice.blob(blob.id)).received == []  # nothing counted as stored
            sent = await alice.send(chat.id, b"chat goes on", content_type="text/plain")
            assert sent.seq > 0
    finally:
        srv.stop()
