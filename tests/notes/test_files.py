"""Uploaded note files become text, and every file we cannot or will not read gets a clear 422.

The PDFs and images are built in code (tests/notes/fixtures.py); PDFs and images go through the
real child process, with its real limits.
"""

import asyncio
import os
import time
import weakref
from pathlib import Path

import pytest
import structlog

from app.errors import UnprocessableContent
from features.notes import files
from features.notes.files import (
    ExtractedText,
    OCRUnavailable,
    UnreadableNote,
    detect_media_type,
    extract_text,
)
from tests.notes.fixtures import (
    PNG_SIGNATURE,
    encrypted_pdf,
    image_bytes,
    inflating_pdf,
    scanned_pdf,
    text_image,
    text_pdf,
)

NOTE = "Patient seen today.\nBP 120/80, HR 72.\nPlan: review in 2 weeks."
TIMEOUT_S = 30.0
needs_tesseract = pytest.mark.skipif(
    not files.ocr_available(), reason="tesseract-ocr (with English data) is not installed"
)


async def extract(data: bytes, declared_type: str | None = None, filename: str | None = None, **kw):
    kw.setdefault("timeout_s", TIMEOUT_S)
    return await extract_text(data, declared_type=declared_type, filename=filename, **kw)


async def refused(data: bytes, declared_type: str | None = None, filename=None, **kw):
    with pytest.raises(UnreadableNote) as caught:
        await extract(data, declared_type, filename, **kw)
    assert caught.value.status == 422
    return caught.value


def live_workers() -> list[int]:
    """Our child processes running the worker module (zombies, already dead, excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and b"file_worker" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def fresh_slots(monkeypatch):
    """A new per-loop semaphore table, so a patched MAX_CONCURRENT_WORKERS takes effect."""
    monkeypatch.setattr(files, "_slots", weakref.WeakKeyDictionary())


# Plain text and Markdown: the in-process fast path.


@pytest.mark.parametrize(
    ("declared_type", "filename", "media_type"),
    [
        ("text/plain", "note.txt", "text/plain"),
        ("text/plain; charset=utf-8", None, "text/plain"),
        (None, None, "text/plain"),
        ("application/octet-stream", "note.log", "text/plain"),
        ("text/markdown", None, "text/markdown"),
        (None, "note.md", "text/markdown"),
        ("text/plain", "Visit.MARKDOWN", "text/markdown"),
    ],
)
async def test_text_and_markdown_are_read_as_they_are(declared_type, filename, media_type):
    result = await extract(NOTE.encode(), declared_type, filename)
    assert result == ExtractedText(NOTE, media_type, "text", None)


async def test_windows_and_old_mac_newlines_become_newlines():
    result = await extract(b"Line one\r\nLine two\rLine three\n", "text/plain")
    assert result.text == "Line one\nLine two\nLine three\n"


async def test_a_utf8_byte_order_mark_is_dropped():
    result = await extract("\ufeffTemp 38.5 °C, Müller".encode(), "text/plain")
    assert result.text == "Temp 38.5 °C, Müller"


@pytest.mark.parametrize(("prefix", "offset"), [(b"", 10), (b"\xef\xbb\xbf", 13)])
async def test_latin1_text_is_refused_as_not_utf8(prefix, offset):
    latin1 = prefix + "Temp 38.5 °C, Müller".encode("latin-1")
    error = await refused(latin1, "text/plain", "note.txt")
    assert error.reason == "not_utf8"
    assert "not UTF-8" in error.detail
    assert f"byte 0xb0 at offset {offset}" in error.detail


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  "])
@pytest.mark.parametrize("declared_type", ["text/plain", None])
async def test_an_empty_or_blank_note_is_refused(data, declared_type):
    error = await refused(data, declared_type)
    assert error.reason == "empty"
    assert "empty" in error.detail


async def test_an_empty_file_declared_as_pdf_is_refused_as_empty():
    assert (await refused(b"", "application/pdf", "scan.pdf")).reason == "empty"


async def test_text_with_nul_bytes_is_not_text():
    error = await refused(b"Patient\x00seen today", None)
    assert error.reason == "unsupported_type"
    assert "text/plain, text/markdown, application/pdf, image/png, image/jpeg" in error.detail


async def test_the_fast_path_reads_thousands_of_notes_a_second():
    note = (NOTE.replace("\n", "\r\n") * 20).encode()
    started = time.perf_counter()
    for _ in range(5000):
        await extract(note, "text/plain", "note.txt")
    assert time.perf_counter() - started < 1.0


# Type detection: the content decides, and must agree with what the upload claims.


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"%PDF-1.7\n...", "application/pdf"),
        (PNG_SIGNATURE + b"....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"Plain words", "text/plain"),
    ],
)
@pytest.mark.parametrize("declared_type", [None, "application/octet-stream", ""])
def test_without_a_meaningful_declared_type_the_content_decides(data, media_type, declared_type):
    assert detect_media_type(data, declared_type, None) == media_type


@pytest.mark.parametrize(
    ("data", "declared_type", "filename", "said", "found"),
    [
        (PNG_SIGNATURE + b"....", "application/pdf", None, "application/pdf", "image/png"),
        (b"%PDF-1.4\n...", "image/png", None, "image/png", "application/pdf"),
        (b"%PDF-1.4\n...", "text/plain", None, "text/plain", "application/pdf"),
        (b"Just text", "application/pdf", "note.pdf", "application/pdf", "plain text"),
        (b"Just text", "application/octet-stream", "scan.png", "'.png'", "plain text"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg", "scan.png", "'.png'", "image/jpeg"),
        (b"\xe9t\xe9\x00\x01", "application/pdf", None, "application/pdf", "is not a PDF"),
    ],
)
async def test_content_that_contradicts_the_declared_type_is_refused(
    data, declared_type, filename, said, found
):
    error = await refused(data, declared_type, filename)
    assert error.reason == "type_mismatch"
    assert said in error.detail
    assert found in error.detail


@pytest.mark.parametrize(
    ("data", "declared_type", "named"),
    [
        (b"GIF89a....", None, "image/gif"),
        (b"II*\x00....", "application/octet-stream", "image/tiff"),
        (b"PK\x03\x04....", None, "docx"),
        (b"Plain words", "application/msword", "application/msword"),
        (b"Plain words", "text/html", "text/html"),
    ],
)
async def test_unsupported_types_are_refused_with_the_supported_list(data, declared_type, named):
    error = await refused(data, declared_type)
    assert error.reason == "unsupported_type"
    assert named in error.detail
    assert "Supported types: text/plain, text/markdown, application/pdf" in error.detail


def test_refusals_are_422_problems_with_their_own_type():
    error = UnreadableNote("x", reason="empty")
    assert isinstance(error, UnprocessableContent)
    assert (error.status, error.slug) == (422, "unreadable-note")
    assert isinstance(OCRUnavailable("PNG images"), UnprocessableContent)


# PDFs, read in the child process.


async def test_a_pdf_text_layer_is_extracted_page_by_page():
    pdf = text_pdf(["Chest pain (since 2 days).", "", "Troponin negative."])
    result = await extract(pdf, "application/pdf", "letter.pdf")
    assert result == ExtractedText(
        "Chest pain (since 2 days).\n\nTroponin negative.", "application/pdf", "pdf", 3
    )


async def test_a_pdf_with_more_pages_than_the_limit_is_refused_before_reading():
    error = await refused(text_pdf([f"Page {n}" for n in range(301)]), "application/pdf")
    assert error.reason == "too_many_pages"
    assert "301 pages" in error.detail
    assert "limit is 300" in error.detail


async def test_the_page_limit_is_inclusive_and_adjustable():
    pdf = text_pdf(["one", "two", "three"])
    assert (await extract(pdf, max_pdf_pages=3)).pages == 3
    error = await refused(pdf, max_pdf_pages=2)
    assert "limit is 2" in error.detail


@pytest.mark.parametrize("user_password", ["", "s3cret"])
async def test_an_encrypted_pdf_is_refused_even_when_the_empty_password_opens_it(user_password):
    pdf = encrypted_pdf(text_pdf(["Confidential letter"]), user_password)
    error = await refused(pdf, "application/pdf")
    assert error.reason == "encrypted_pdf"
    assert "encrypted" in error.detail


@pytest.mark.parametrize(
    "data",
    [
        text_pdf(["Discharge letter"])[:200],
        text_pdf(["Discharge letter"])[:-60],
        b"%PDF-1.4\n" + bytes(range(256)) * 8,
    ],
    ids=["truncated", "truncated-tail", "garbage"],
)
async def test_a_corrupt_pdf_is_refused(data):
    error = await refused(data, "application/pdf")
    assert error.reason == "corrupt_pdf"
    assert "damaged" in error.detail
    assert "Stream" not in error.detail  # pypdf's own message is for the log only


async def test_a_pdf_without_text_or_images_is_an_empty_note():
    error = await refused(text_pdf(["", ""]), "application/pdf")
    assert error.reason == "empty"
    assert "no text" in error.detail


async def test_a_decompression_bomb_is_stopped_by_pypdf_limit():
    error = await refused(inflating_pdf(80_000_000), "application/pdf")
    assert error.reason == "pdf_limit_reached"


async def test_the_child_memory_limit_is_enforced(monkeypatch):
    monkeypatch.setattr(files, "WORKER_MEMORY_BYTES", 64 * 1024**2)
    error = await refused(inflating_pdf(70_000_000), "application/pdf")
    assert error.reason == "out_of_memory"
    assert "64 MiB" in error.detail


# Images and scanned PDFs: OCR.


@needs_tesseract
@pytest.mark.parametrize(
    ("image_format", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")]
)
async def test_an_image_is_read_by_ocr(image_format, media_type):
    image = image_bytes(text_image(["Blood pressure 120/80", "Aspirin 100 mg daily"]), image_format)
    result = await extract(image, media_type, f"scan.{image_format.lower()}")
    assert result.text == "Blood pressure 120/80\nAspirin 100 mg daily"
    assert (result.media_type, result.method, result.pages) == (media_type, "ocr", 1)


@needs_tesseract
async def test_a_scanned_pdf_is_read_by_ocr_of_its_page_images():
    result = await extract(scanned_pdf(["Metformin 500 mg twice daily"]), "application/pdf")
    assert result == ExtractedText("Metformin 500 mg twice daily", "application/pdf", "ocr", 1)


@needs_tesseract
async def test_an_image_without_text_is_an_empty_note():
    blank = image_bytes(text_image([" "]), "PNG")
    error = await refused(blank, "image/png")
    assert error.reason == "empty"
    assert "No text could be recognised" in error.detail


@needs_tesseract
async def test_an_image_over_the_pixel_limit_is_refused(monkeypatch):
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 10_000)
    image = image_bytes(text_image(["Blood pressure 120/80"]), "PNG")
    error = await refused(image, "image/png")
    assert error.reason == "image_too_large"
    assert "10,000 pixels" in error.detail


@needs_tesseract
async def test_a_damaged_image_is_refused():
    error = await refused(image_bytes(text_image(["BP"]), "PNG")[:60], "image/png")
    assert error.reason == "corrupt_image"


async def test_without_tesseract_an_image_is_refused_before_any_child_starts(monkeypatch):
    monkeypatch.setattr(files, "ocr_available", lambda: False)
    # Were a child started, this would answer "failed", not OCRUnavailable.
    monkeypatch.setattr(files, "WORKER_MODULE", "features.notes.no_such_module")
    with pytest.raises(OCRUnavailable) as caught:
        await extract(image_bytes(text_image(["BP"]), "PNG"), "image/png")
    assert caught.value.status == 422
    assert "install tesseract-ocr" in caught.value.detail
    assert "PNG images" in caught.value.detail


async def test_without_tesseract_a_scanned_pdf_says_ocr_is_unavailable(monkeypatch):
    monkeypatch.setattr(files, "ocr_available", lambda: False)
    with pytest.raises(OCRUnavailable) as caught:
        await extract(scanned_pdf(["Metformin 500 mg"]), "application/pdf")
    assert "scanned PDFs" in caught.value.detail
    # A PDF with a text layer needs no OCR.
    assert (await extract(text_pdf(["Letter"]), "application/pdf")).text == "Letter"


# The child process: deadline, crashes, concurrency, and the event loop meanwhile.


async def test_an_extraction_past_the_deadline_is_killed_and_refused():
    error = await refused(text_pdf(["Discharge letter"]), "application/pdf", timeout_s=0.001)
    assert error.reason == "timeout"
    assert "longer than 0.001 s" in error.detail
    assert live_workers() == []


async def test_a_cancelled_extraction_leaves_no_child_behind():
    pages = [f"Page {n}: " + "lorem ipsum dolor sit amet " * 20 for n in range(300)]
    task = asyncio.create_task(extract(text_pdf(pages), "application/pdf"))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if live_workers():
            break
    assert live_workers(), "the child never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not live_workers():
            break
        await asyncio.sleep(0.01)
    assert live_workers() == []


async def test_the_event_loop_keeps_running_during_a_slow_extraction():
    pages = [f"Page {n}: " + "lorem ipsum dolor sit amet " * 40 for n in range(300)]
    pdf = text_pdf(pages)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticker = asyncio.create_task(tick())
    started = loop.time()
    result = await extract(pdf, "application/pdf")
    elapsed = loop.time() - started
    ticker.cancel()
    assert result.pages == 300
    # A stall would show as one gap about as long as the extraction itself.
    assert elapsed > 0.12, "the extraction was too quick to show anything"
    assert len(gaps) > 10
    assert max(gaps) < min(0.15, elapsed / 2), (
        f"the loop stalled for {max(gaps):.3f} s of {elapsed:.3f} s"
    )


async def test_child_processes_are_limited_to_max_concurrent_workers(monkeypatch, fresh_slots):
    monkeypatch.setattr(files, "MAX_CONCURRENT_WORKERS", 1)
    pdf = text_pdf([f"Page {n}: " + "lorem ipsum " * 40 for n in range(100)])
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(len(live_workers()))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(extract(pdf, "application/pdf") for _ in range(3)))
    watcher.cancel()
    assert [r.pages for r in results] == [100, 100, 100]
    assert max(seen) == 1


@pytest.mark.parametrize(
    ("module", "problem"),
    [
        ("features.notes.no_such_module", "exit status 1"),  # exits 1, traceback on stderr
        ("this", "Expecting value"),  # exits 0 but answers with a poem, not JSON
    ],
)
async def test_a_crashed_child_is_a_422_and_is_logged_not_shown(monkeypatch, module, problem):
    monkeypatch.setattr(files, "WORKER_MODULE", module)
    logger = structlog.testing.CapturingLogger()
    monkeypatch.setattr(files, "log", logger)
    error = await refused(text_pdf(["Letter"]) + b" " * 1_000_000, "application/pdf")
    assert error.reason == "failed"
    assert error.detail == (
        "The PDF could not be processed: it may be damaged or too complex to read."
    )
    crashes = [call for call in logger.calls if call.args == ("note_extraction_crashed",)]
    assert len(crashes) == 1
    assert problem in crashes[0].kwargs["problem"]
    if module != "this":
        assert "No module named" in crashes[0].kwargs["stderr_tail"]


def test_the_child_gets_no_secrets(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/x")
    environment = files._worker_environment()
    assert "SECRET_KEY" not in environment
    assert "DATABASE_URL" not in environment
    assert environment["OMP_THREAD_LIMIT"] == "1"
