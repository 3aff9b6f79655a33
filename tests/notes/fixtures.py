"""Build the uploaded files the note-extraction tests need, in code: no binary file is committed.

`text_pdf` writes a minimal PDF by hand (one Helvetica text line per page, a correct xref
table), so the tests depend on nothing but the PDF specification; pypdf's writer only encrypts,
and Pillow draws the images that OCR must read.
"""

import io
import zlib

from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def _assemble_pdf(objects: list[bytes]) -> bytes:
    """Number `objects` from 1, write them with an xref table; object 1 must be the catalog."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_offset = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_offset,
    )
    return bytes(out)


def text_pdf(pages: list[str]) -> bytes:
    """A PDF with a text layer: one page per string, each drawn in 12 pt Helvetica.

    An empty string makes a page with no text at all (no text layer, no image).
    """
    # 1 catalog, 2 page tree, 3 font, then a (page, content stream) pair per page.
    page_numbers = [4 + 2 * index for index in range(len(pages))]
    kids = b" ".join(b"%d 0 R" % number for number in page_numbers)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for page_number, text in zip(page_numbers, pages, strict=True):
        stream = b"BT /F1 12 Tf 72 720 Td " + _pdf_string(text) + b" Tj ET" if text else b""
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_number + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _assemble_pdf(objects)


def inflating_pdf(inflated_bytes: int) -> bytes:
    """A one-page PDF whose Flate-compressed content stream inflates to `inflated_bytes`.

    A few kilobytes on the wire that need that much memory to read: a decompression bomb.
    """
    compressed = zlib.compress(b" " * inflated_bytes, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(compressed)
        + compressed
        + b"\nendstream",
    ]
    return _assemble_pdf(objects)


def encrypted_pdf(pdf: bytes, user_password: str = "") -> bytes:
    """`pdf` encrypted by pypdf (RC4-128); with the empty user password any reader opens it."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def text_image(lines: list[str], *, size: int = 48) -> Image.Image:
    """Black text on white, in Pillow's default font at `size` points: what a clean scan gives."""
    font = ImageFont.load_default(size=size)
    line_height = int(size * 1.6)
    width = max(int(font.getlength(line)) for line in lines) + 2 * size
    image = Image.new("L", (width, line_height * len(lines) + 2 * size), color=255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((size, size + index * line_height), line, font=font, fill=0)
    return image


def image_bytes(image: Image.Image, image_format: str) -> bytes:
    """`image` encoded as "PNG", "JPEG" or "PDF" (Pillow's PDF: one page, the image only)."""
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def scanned_pdf(lines: list[str]) -> bytes:
    """A PDF whose only page is an image of `lines`: no text layer, as a scanner writes it."""
    return image_bytes(text_image(lines), "PDF")
