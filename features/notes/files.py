"""Turn an uploaded clinical-note file into text, safely.

Plain text and Markdown are decoded here, in-process: that path must keep up with thousands of
notes a second. PDFs and images are read by a child process (`features.notes.file_worker`)
under memory and CPU limits and a wall-clock deadline, so a hostile or huge file can neither
block the event loop nor crash or exhaust the service; at most `MAX_CONCURRENT_WORKERS` such
children run at once.

Every refusal is an `UnreadableNote` (422) whose `reason` names the rule that was broken and
whose detail tells the uploader what to do; an internal failure is logged for the operator and
never shown to the client.
"""

import asyncio
import codecs
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from app.errors import UnprocessableContent

log = structlog.get_logger(__name__)

TEXT = "text/plain"
MARKDOWN = "text/markdown"
PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
SUPPORTED_MEDIA_TYPES = (TEXT, MARKDOWN, PDF, PNG, JPEG)
TEXT_TYPES = frozenset({TEXT, MARKDOWN})
IMAGE_TYPES = frozenset({PNG, JPEG})

# The child process: tests point it elsewhere to see how a crash is reported.
WORKER_MODULE = "features.notes.file_worker"
WORKER_MEMORY_BYTES = 1024**3
MAX_CONCURRENT_WORKERS = max(1, min(os.cpu_count() or 1, 8))
# A 600 dpi A4 scan is 35 Mpx; Pillow's own default is 89 Mpx.
MAX_IMAGE_PIXELS = 60_000_000
MAX_TEXT_CHARS = 10_000_000
TESSERACT_COMMAND = "tesseract"
OCR_LANGUAGE = "eng"

_DESCRIPTIONS = {
    TEXT: "plain text",
    MARKDOWN: "Markdown text",
    PDF: "a PDF (application/pdf)",
    PNG: "a PNG image (image/png)",
    JPEG: "a JPEG image (image/jpeg)",
}
_NEEDS_OCR = {
    PDF: "scanned PDFs (pages without a text layer)",
    PNG: "PNG images",
    JPEG: "JPEG images",
}
_SIGNATURES = ((b"%PDF-", PDF), (b"\x89PNG\r\n\x1a\n", PNG), (b"\xff\xd8\xff", JPEG))
_UNSUPPORTED_SIGNATURES = (
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"PK\x03\x04", "a ZIP archive (such as a Word .docx file)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office 97-2003 document (such as a Word .doc file)"),
    (b"{\\rtf", "application/rtf"),
)
# What clients send when they do not know the type: then the content alone decides.
_GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/binary"}
)
_TYPE_ALIASES = {
    "text/x-markdown": MARKDOWN,
    "application/x-pdf": PDF,
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
}
_EXTENSIONS = {
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".pdf": PDF,
    ".png": PNG,
    ".jpg": JPEG,
    ".jpeg": JPEG,
}
_SUPPORTED_LIST = ", ".join(SUPPORTED_MEDIA_TYPES)


@dataclass(frozen=True, slots=True)
class ExtractedText:
    text: str
    media_type: str
    # "text"; "pdf" (every page from the PDF's text layer); "ocr" (an image, or a PDF with at
    # least one page without a text layer, whose images were read by OCR)
    method: str
    pages: int | None  # a PDF's page count; 1 for an image; None for text


class UnreadableNote(UnprocessableContent):
    """The file cannot be turned into text; `reason` says which rule it broke."""

    title, slug = "Unreadable Note", "unreadable-note"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class OCRUnavailable(UnprocessableContent):
    """The file needs OCR and this server has no usable tesseract."""

    title, slug = "OCR Unavailable", "ocr-unavailable"

    def __init__(self, needed_for: str) -> None:
        super().__init__(
            f"OCR is not available on this server: install tesseract-ocr (with the "
            f"'{OCR_LANGUAGE}' language data) to read {needed_for}."
        )
        self.needed_for = needed_for


def _empty_note() -> UnreadableNote:
    return UnreadableNote("The note is empty: it contains no text.", reason="empty")


def _unsupported(what: str) -> UnreadableNote:
    return UnreadableNote(
        f"Unsupported file type: {what}. Supported types: {_SUPPORTED_LIST}.",
        reason="unsupported_type",
    )


def _claims(declared_type: str | None, filename: str | None) -> list[tuple[str, str]]:
    """What the upload says it is, as (who says so, media type) pairs."""
    claims = []
    declared = (declared_type or "").split(";", 1)[0].strip().lower()
    declared = _TYPE_ALIASES.get(declared, declared)
    if declared not in _GENERIC_TYPES:
        if declared not in SUPPORTED_MEDIA_TYPES:
            raise _unsupported(f"{declared} (the declared Content-Type)")
        claims.append((f"{declared} (its Content-Type)", declared))
    if filename:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        # An unknown extension (".log", none at all) claims nothing: the content decides.
        if suffix in _EXTENSIONS:
            claims.append((f"'{suffix}' (its file name)", _EXTENSIONS[suffix]))
    return claims


def _sniff(data: bytes) -> tuple[str | None, str | None]:
    """(supported media type or None, a description of unsupported content or None)."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type, None
    for signature, description in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return None, description
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return None, "image/webp"
    if b"\x00" in data:
        return None, None  # binary, of no type we know
    return TEXT, None


def _detect(data: bytes, declared_type: str | None, filename: str | None) -> tuple[str, str | None]:
    """The media type and, for text, the decoded text (so the fast path decodes only once)."""
    if not data:
        raise _empty_note()
    claims = _claims(declared_type, filename)
    sniffed, unsupported = _sniff(data)
    text = None
    if sniffed == TEXT:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            if any(claimed not in TEXT_TYPES for _, claimed in claims):
                sniffed = None  # neither text nor the binary type it claims to be
            else:
                # utf-8-sig counts from after the byte order mark.
                offset = error.start + (
                    len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
                )
                raise UnreadableNote(
                    f"The text is not UTF-8 (byte 0x{data[offset]:02x} at offset {offset} is "
                    "invalid; Latin-1 or Windows-1252 perhaps): save it as UTF-8 and upload "
                    "it again.",
                    reason="not_utf8",
                ) from None
    for said_by, claimed in claims:
        agrees = claimed == sniffed or (claimed in TEXT_TYPES and sniffed == TEXT)
        if not agrees:
            content = _DESCRIPTIONS.get(sniffed or "") or unsupported
            content = f"is {content}" if content else f"is not {_DESCRIPTIONS[claimed]}"
            raise UnreadableNote(
                f"The file's content does not match its declared type: it is declared as "
                f"{said_by} but its content {content}.",
                reason="type_mismatch",
            )
    if sniffed is None:
        raise _unsupported(unsupported or "binary content of an unrecognised type")
    if sniffed == TEXT and any(claimed == MARKDOWN for _, claimed in claims):
        sniffed = MARKDOWN
    return sniffed, text


def detect_media_type(data: bytes, declared_type: str | None, filename: str | None) -> str:
    """The file's media type, from its content, checked against its declared type and name.

    Raises UnreadableNote for an empty file, content that contradicts the declared type or
    the file extension, text that is not UTF-8, and types we do not read.
    """
    return _detect(data, declared_type, filename)[0]


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@functools.cache
def ocr_available() -> bool:
    """Whether tesseract (looked up on PATH, as pytesseract does) runs and knows OCR_LANGUAGE.

    Cached: the first call runs `tesseract --list-langs` once (a few milliseconds).
    """
    command = shutil.which(TESSERACT_COMMAND)
    if command is None:
        return False
    try:
        listing = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [command, "--list-langs"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return OCR_LANGUAGE in listing.stdout.split()


_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
    weakref.WeakKeyDictionary()
)


def _worker_slots() -> asyncio.Semaphore:
    """The semaphore capping child processes, one per event loop (tests run several loops)."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_WORKERS)
    return slots


_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The child parses untrusted files: it gets no secrets (DATABASE_URL, SECRET_KEY, ...).
_INHERITED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH")


def _worker_environment() -> dict[str, str]:
    environment = {key: os.environ[key] for key in _INHERITED_ENVIRONMENT if key in os.environ}
    if "TESSDATA_PREFIX" in os.environ:
        environment["TESSDATA_PREFIX"] = os.environ["TESSDATA_PREFIX"]
    # One thread per tesseract: MAX_CONCURRENT_WORKERS already spreads the work over the CPUs.
    environment["OMP_THREAD_LIMIT"] = "1"
    return environment


def _worker_job(media_type: str, timeout_s: float, max_pdf_pages: int) -> dict[str, Any]:
    return {
        "media_type": media_type,
        "max_pdf_pages": max_pdf_pages,
        "ocr": ocr_available(),
        "ocr_language": OCR_LANGUAGE,
        "memory_bytes": WORKER_MEMORY_BYTES,
        "cpu_seconds": math.ceil(timeout_s) + 1,
        "wall_seconds": math.ceil(timeout_s) + 2,
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "max_text_chars": MAX_TEXT_CHARS,
    }


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the child and any tesseract it started: they share the child's process group."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _failed(media_type: str) -> UnreadableNote:
    kind = "PDF" if media_type == PDF else "image"
    return UnreadableNote(
        f"The {kind} could not be processed: it may be damaged or too complex to read.",
        reason="failed",
    )


async def _run_worker(data: bytes, media_type: str, timeout_s: float, max_pdf_pages: int) -> dict:
    job = _worker_job(media_type, timeout_s, max_pdf_pages)
    async with _worker_slots():
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            json.dumps(job),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=_PROJECT_ROOT,
            env=_worker_environment(),
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(data), timeout_s)
        except TimeoutError:
            _kill(process)
            await process.wait()
            log.warning(
                "note_extraction_timed_out",
                media_type=media_type,
                size_bytes=len(data),
                timeout_s=timeout_s,
            )
            raise UnreadableNote(
                f"Extracting the text took longer than {timeout_s:g} s, the limit: the file "
                "is too large or too complex.",
                reason="timeout",
            ) from None
        except BaseException:  # cancelled (the client went away): leave no child behind
            _kill(process)
            raise
    elapsed_ms = round((time.monotonic() - started) * 1000)
    try:
        if process.returncode != 0:
            raise ValueError(f"exit status {process.returncode}")
        result = json.loads(stdout)
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            raise ValueError("no result object")
    except ValueError as error:
        log.error(
            "note_extraction_crashed",
            media_type=media_type,
            size_bytes=len(data),
            problem=str(error),
            returncode=process.returncode,
            stderr_tail=stderr[-2000:].decode("utf-8", "replace"),
            elapsed_ms=elapsed_ms,
        )
        raise _failed(media_type) from None
    log.info("note_extracted", media_type=media_type, ok=result["ok"], elapsed_ms=elapsed_ms)
    return result


def _refusal(result: dict[str, Any], media_type: str) -> Exception:
    """The client-facing error for the worker's `{"ok": false, "reason": ...}` answer."""
    reason = result.get("reason")
    if "diagnostic" in result:
        log.info(
            "note_refused", media_type=media_type, reason=reason, diagnostic=result["diagnostic"]
        )
    if reason == "ocr_unavailable":
        return OCRUnavailable(_NEEDS_OCR[media_type])
    messages = {
        "encrypted_pdf": "The PDF is encrypted (password-protected): upload an unencrypted copy.",
        "corrupt_pdf": "The PDF is damaged or malformed and could not be read.",
        "pdf_limit_reached": "The PDF is too large to read safely: a compressed stream in it "
        "expands past the size limit.",
        "too_many_pages": "The PDF has {pages} pages; the limit is {limit} pages.",
        "unreadable_page_images": "Page {page} of the PDF has no text layer and its images "
        "could not be decoded for OCR.",
        "corrupt_image": "The image is damaged or could not be decoded.",
        "image_too_large": "The image is too large to read: the limit is {limit:,} pixels.",
        "too_much_text": "The file holds more text than the limit of {limit:,} characters.",
        "out_of_memory": "Reading the file needed more memory than the {limit_mib} MiB allowed.",
    }
    template = messages.get(reason or "")
    if template is None:
        log.error("note_extraction_unknown_refusal", media_type=media_type, reason=reason)
        return _failed(media_type)
    details = {key: value for key, value in result.items() if key not in ("ok", "reason")}
    if "limit" in details and reason == "out_of_memory":
        details["limit_mib"] = details["limit"] // 1024**2
    return UnreadableNote(template.format(**details), reason=reason)


async def extract_text(
    data: bytes,
    *,
    declared_type: str | None,
    filename: str | None,
    timeout_s: float,
    max_pdf_pages: int = 300,
) -> ExtractedText:
    """The text of an uploaded note (text, Markdown, PDF, PNG or JPEG).

    Raises UnreadableNote (empty, not UTF-8, type mismatch, unsupported type, encrypted or
    corrupt PDF, more than `max_pdf_pages` pages, longer than `timeout_s`, ...) and
    OCRUnavailable when the file needs OCR and tesseract is missing.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    media_type, text = _detect(data, declared_type, filename)
    if text is not None:
        text = _normalise(text)
        if not text.strip():
            raise _empty_note()
        return ExtractedText(text, media_type, "text", None)

    if media_type in IMAGE_TYPES and not ocr_available():
        raise OCRUnavailable(_NEEDS_OCR[media_type])
    result = await _run_worker(data, media_type, timeout_s, max_pdf_pages)
    if not result["ok"]:
        raise _refusal(result, media_type)
    text = _normalise(str(result["text"])).replace("\x00", "")
    if not text.strip():
        if result["method"] == "ocr":
            raise UnreadableNote("No text could be recognised in the file.", reason="empty")
        raise UnreadableNote(
            "The PDF contains no text: its pages have neither a text layer nor images to read.",
            reason="empty",
        )
    return ExtractedText(text, media_type, result["method"], result["pages"])
