"""The child process that reads an uploaded PDF or image (`python -m features.notes.file_worker`).

A hostile or huge file must not block, crash or exhaust the API process, so parsing happens
here, under resource limits, and the parent (`features.notes.files`) kills us on its deadline.
The protocol: JOB (argv[1]) is a JSON object built by `files._worker_job`; the file arrives on
stdin; the answer is one JSON object on stdout, either
`{"ok": true, "text": ..., "method": "pdf" | "ocr", "pages": n}` or
`{"ok": false, "reason": ..., **details}` for a file we refuse. Anything else (a traceback on
stderr, a non-zero exit, death by signal) is a crash, which the parent logs and reports as such.

Only the standard library is imported at module level: pypdf, Pillow and pytesseract load when
a job needs them, so starting the process stays cheap.
"""

import io
import json
import logging
import os
import resource
import signal
import sys
import warnings
from typing import Any

PDF = "application/pdf"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg"})


class Refusal(Exception):
    """A file we will not or cannot read: reported to the parent as `{"ok": false, ...}`."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def _lower_limit(kind: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (soft, hard))


def limit_resources(job: dict[str, Any]) -> None:
    """Cap memory and CPU for us and for the tesseract processes we start (they inherit them)."""
    _lower_limit(resource.RLIMIT_AS, job["memory_bytes"], job["memory_bytes"])
    # Past the soft CPU limit the kernel sends SIGXCPU (which kills us), past the hard one
    # SIGKILL. The parent's deadline normally comes first: these, and the alarm, cover a parent
    # that died without killing us.
    _lower_limit(resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + 1)
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    signal.alarm(job["wall_seconds"])


class _Extraction:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.chars = 0

    def add(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > self.job["max_text_chars"]:
            raise Refusal("too_much_text", limit=self.job["max_text_chars"])
        return text

    def ocr(self, image: Any) -> str:
        if not self.job["ocr"]:
            raise Refusal("ocr_unavailable")
        width, height = image.size
        if width * height > self.job["max_image_pixels"]:
            raise Refusal(
                "image_too_large", width=width, height=height, limit=self.job["max_image_pixels"]
            )
        import pytesseract

        if image.mode not in ("1", "L", "RGB"):
            image = image.convert("RGB")
        try:
            text = pytesseract.image_to_string(image, lang=self.job["ocr_language"])
            return self.add(text.strip())
        except pytesseract.TesseractNotFoundError:
            raise Refusal("ocr_unavailable") from None


def _open_image(data: bytes, max_pixels: int) -> Any:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    # Pillow only warns between 1x and 2x its limit; a refusal is what we want.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refusal("image_too_large", limit=max_pixels) from None
    except MemoryError:
        raise
    except Exception as error:
        raise Refusal("corrupt_image", diagnostic=_describe(error)) from None
    return image


def extract_image(data: bytes, job: dict[str, Any]) -> dict[str, Any]:
    extraction = _Extraction(job)
    image = _open_image(data, job["max_image_pixels"])
    return {"ok": True, "text": extraction.ocr(image), "method": "ocr", "pages": 1}


def _pdf_refusal(error: Exception) -> Refusal:
    from pypdf import errors

    if isinstance(error, getattr(errors, "LimitReachedError", ())):
        # pypdf's own guard against decompression bombs.
        return Refusal("pdf_limit_reached", diagnostic=_describe(error))
    return Refusal("corrupt_pdf", diagnostic=_describe(error))


def _page_images(page: Any, page_number: int) -> list[Any]:
    """The decoded images of a page; a page whose every image fails to decode is refused."""
    images, failures = [], []
    try:
        files = list(page.images)
    except MemoryError:
        raise
    except Exception as error:
        raise _pdf_refusal(error) from None
    for image_file in files:
        try:
            images.append(image_file.image)
        except MemoryError:
            raise
        except Exception as error:
            refusal = _pdf_refusal(error)
            if refusal.reason == "pdf_limit_reached":
                raise refusal from None
            failures.append(_describe(error))
    if failures and not images:
        raise Refusal("unreadable_page_images", page=page_number, diagnostic=failures[0])
    return images


def extract_pdf(data: bytes, job: dict[str, Any]) -> dict[str, Any]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, WrongPasswordError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except (DependencyError, FileNotDecryptedError, WrongPasswordError):
        encrypted = True
    except MemoryError:
        raise
    except Exception as error:
        raise _pdf_refusal(error) from None
    if encrypted:
        # Refused even when the empty password opens it: the sender meant to protect it.
        raise Refusal("encrypted_pdf")
    try:
        page_count = len(reader.pages)
    except MemoryError:
        raise
    except Exception as error:
        raise _pdf_refusal(error) from None
    if page_count > job["max_pdf_pages"]:
        raise Refusal("too_many_pages", pages=page_count, limit=job["max_pdf_pages"])

    extraction = _Extraction(job)
    texts, method = [], "pdf"
    for index in range(page_count):
        try:
            page = reader.pages[index]
            text = extraction.add(page.extract_text() or "")
        except (Refusal, MemoryError):
            raise
        except Exception as error:
            raise _pdf_refusal(error) from None
        if not text.strip():
            # No text layer: a scanned page. pypdf cannot render a page, so read its images.
            images = _page_images(page, index + 1)
            if images:
                method = "ocr"
                text = "\n".join(extraction.ocr(image) for image in images)
        if text.strip():
            texts.append(text.strip("\n"))
    return {"ok": True, "text": "\n\n".join(texts), "method": method, "pages": page_count}


def _describe(error: BaseException) -> str:
    """For the operator's log only: the parent never shows this to the client."""
    return f"{type(error).__name__}: {error}"[:300]


def run(job: dict[str, Any], data: bytes) -> dict[str, Any]:
    try:
        if job["media_type"] == PDF:
            result = extract_pdf(data, job)
        elif job["media_type"] in IMAGE_TYPES:
            result = extract_image(data, job)
        else:
            raise Refusal("unsupported_type")
    except Refusal as refusal:
        return {"ok": False, "reason": refusal.reason, **refusal.details}
    except MemoryError:
        return {"ok": False, "reason": "out_of_memory", "limit": job["memory_bytes"]}
    # Lone surrogates (from odd PDF fonts) cannot be stored as UTF-8: replace them.
    result["text"] = result["text"].encode("utf-8", "replace").decode("utf-8")
    return result


def main() -> None:
    job = json.loads(sys.argv[1])
    # Keep fd 1 for the answer alone: whatever a library prints goes to stderr instead.
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # pypdf logs a warning per oddity; a hostile PDF could fill the parent's stderr buffer.
    logging.disable(logging.CRITICAL)
    limit_resources(job)
    data = sys.stdin.buffer.read()
    result = run(job, data)
    answer.write(json.dumps(result).encode("ascii"))
    answer.close()


if __name__ == "__main__":
    main()
