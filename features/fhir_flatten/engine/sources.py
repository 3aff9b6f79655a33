"""Read FHIR input (a Bundle, NDJSON, or one resource) into resources to load or delete.

Bundles are read in one pass with bounded memory: the entries are streamed (jsonstream.py),
each is checked and its `fullUrl` noted, and references to the fullUrls of entries (`urn:uuid:`,
`urn:oid:` or any other absolute URI; a fullUrl is absolute) are rewritten to `Type/id`. An entry
comes out as soon as it is read when every reference in it that could name a fullUrl names one
already seen (references mostly point backwards: to the Patient from its Encounters, to an
Encounter from its Conditions); the others wait in a spool and come out, resolved, at the end.
Problems are collected over the whole input and raise `InvalidEntries` at the end, so entries
may have come out before it: a caller loads a Bundle in one transaction and rolls it back.
Memory holds one entry plus the fullUrl map (about 100 bytes an entry for urn:uuid fullUrls,
the common case) and the ids of the waiting entries.

Accepted Bundle types: transaction, batch, collection and searchset. Not history: its entries
come newest first and repeat a resource's versions, so loading them in file order would leave
the oldest version; not the response types, which hold outcomes, not input; not document or
message, which are signed or addressed wholes rather than data to load (add them to
BUNDLE_TYPES if that changes).
"""

from __future__ import annotations

import io
import json
import re
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import orjson

from features.fhir_flatten.engine.jsonstream import (
    CHUNK_BYTES,
    End,
    Item,
    JsonStreamError,
    Member,
    iter_object,
    nests_deeper_than,
    read_up_to,
)

BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "searchset"})
NDJSON_CONTENT_TYPES = frozenset(
    {"application/fhir+ndjson", "application/x-ndjson", "application/ndjson"}
)
# The largest single entry, line or resource read (in characters: 50 MB of ASCII).
MAX_ENTRY_CHARS = 50 * 1024 * 1024
MAX_LISTED_PROBLEMS = 1000
# Far deeper than real FHIR (a Questionnaire nested 20 groups deep is about 45 levels), and far
# enough below Python's recursion limit that whoever walks or serialises a resource later is safe.
MAX_NESTING = 100
# Small Bundles (a Synthea patient is about 1 MB) stay in memory; larger ones go to disk.
SPOOL_MEMORY_BYTES = 2 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
_TOO_DEEP = object()  # what a value nested too deeply for the parser reads as

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE_AND_ID = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")
_RESTFUL_URL = re.compile(
    r"https?://.+/(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_CANONICAL_UUID_URN = re.compile(r"urn:uuid:[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
_PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")
# A reference that may name a fullUrl: an absolute URI (it has a scheme).
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# References are found in an entry's raw text, at C speed, rather than by walking every node of
# the parsed entry in Python (twice as slow, for the whole read). A "reference" member inside a
# string value has its quotes escaped, so it cannot match. A value with an escape in it (say
# "http:\/\/x\/Patient\/1", from serialisers that escape slashes) sends the entry to the walk.
_PLAIN_REFERENCE = re.compile(r'("reference"\s*:\s*")([^"\\]*)"')
_ESCAPED_REFERENCE = re.compile(r'"reference"\s*:\s*"[^"\\]*\\')
# A spooled entry: its index in the Bundle, whether it is a DELETE, then "Type/id" and (for a
# resource) the entry's JSON, each preceded by its length in bytes.
_FRAME = struct.Struct(">I?HI")


@dataclass(frozen=True, slots=True)
class Upsert:
    """A resource to load (when one comes more than once, the latest version wins)."""

    resource_type: str
    id: str
    resource: dict


@dataclass(frozen=True, slots=True)
class Delete:
    """A Bundle entry with request.method DELETE and request.url "Type/id"."""

    resource_type: str
    id: str


@dataclass(frozen=True, slots=True)
class EntryProblem:
    where: str  # "entry[12]", "line 7", "entry[12].resource.subject.reference"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


class SourceError(Exception):
    """The input as a whole is unusable (not JSON, not FHIR, not an accepted Bundle...)."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(f"{message} ({where})" if where else message)
        self.message = message
        self.where = where

    def __reduce__(self) -> tuple:  # raised in a flatten worker process, pickled back
        return type(self), (self.message, self.where)


class InvalidEntries(SourceError):
    """Some entries or lines are bad: the whole input must be refused.

    `problems` lists up to MAX_LISTED_PROBLEMS of them; `total` counts them all.
    """

    def __init__(self, problems: list[EntryProblem], total: int) -> None:
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{total} {noun} in the input", problems[0].where if problems else None)
        self.problems = problems
        self.total = total

    def __reduce__(self) -> tuple:
        return type(self), (self.problems, self.total)


class _Problems:
    def __init__(self) -> None:
        self.listed: list[EntryProblem] = []
        self.total = 0

    def add(self, where: str, message: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(EntryProblem(where, message))

    def raise_any(self) -> None:
        if self.total:
            raise InvalidEntries(self.listed, self.total)


# --- entry point ---------------------------------------------------------------------------


def read_any(
    stream: BinaryIO, *, content_type: str | None = None, filename: str | None = None
) -> Iterator[Upsert | Delete]:
    """Read a Bundle, NDJSON or one resource, whichever the input is.

    NDJSON when the content type or file name says so, or when the input is several JSON
    objects one per line; a Bundle when the object's resourceType is "Bundle" (or, when that
    key comes late, when it starts with an `entry` array); otherwise one resource.
    """
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in NDJSON_CONTENT_TYPES or (filename or "").lower().endswith(".ndjson"):
        yield from read_ndjson(stream)
        return
    head = read_up_to(stream.read, SNIFF_BYTES)
    rewound = _Rewound(head, stream.read)
    kind = _sniff(head, complete=len(head) < SNIFF_BYTES)
    if kind == "bundle":
        yield from _read_bundle(rewound.read, spool_dir=None)
    elif kind == "ndjson":
        yield from _read_ndjson(rewound.read)
    else:
        yield _read_resource(rewound.read)


def _sniff(head: bytes, *, complete: bool) -> str:
    """Which reader the input needs, from its first bytes: "bundle", "ndjson" or "resource"."""
    resource_type: Any = None
    starts_with_entries = False
    end: int | None = None
    try:
        events = iter_object(
            io.BytesIO(head).read, array_key="entry", max_value_chars=SNIFF_BYTES, alone=False
        )
        for event in events:
            if isinstance(event, Member) and event.key == "resourceType":
                resource_type = event.value
            elif isinstance(event, Item) and resource_type is None:
                starts_with_entries = True
            elif isinstance(event, End):
                end = event.position.offset
    except JsonStreamError as error:
        if complete or not error.at_end:  # not merely the end of what was sniffed
            raise SourceError(error.message, error.position.describe()) from None
    if end is not None:
        rest = head[end:].lstrip()
        if rest.startswith(b"{") and b"\n" in head[end : len(head) - len(rest)]:
            return "ndjson"
        if rest:
            where = f"byte {len(head) - len(rest)}"
            raise SourceError("unexpected data after the JSON object", where)
    if resource_type == "Bundle" or (resource_type is None and starts_with_entries):
        return "bundle"
    if resource_type is None:
        if end is not None:
            raise SourceError("not a FHIR resource: the JSON object has no resourceType")
        return "bundle"  # undecided within the first bytes: the Bundle reader will say
    one_line = b"\n" not in head[:end].strip()
    return "ndjson" if one_line else "resource"


def _read_resource(read: Callable[[int], bytes]) -> Upsert:
    """One resource, not in a Bundle: read whole (it is one entry's worth)."""
    data = read_up_to(read, MAX_ENTRY_CHARS + 1)
    if len(data) > MAX_ENTRY_CHARS:
        raise SourceError(f"a single resource is longer than {MAX_ENTRY_CHARS:,} bytes", "byte 0")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SourceError("not UTF-8 text", f"byte {error.start}") from None
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as error:
        offset = len(data) - len(text.encode()) + len(text[: error.pos].encode())
        where = f"byte {offset} (line {error.lineno}, column {error.colno})"
        raise SourceError(f"not valid JSON: {error.msg}", where) from None
    except RecursionError:  # far deeper than MAX_NESTING
        resource = _TOO_DEEP
    if resource is _TOO_DEEP or nests_deeper_than(resource, MAX_NESTING):
        raise SourceError(f"nested deeper than {MAX_NESTING} levels", "resource")
    problems = _Problems()
    resource_type, resource_id = _identify(resource, "resource", problems)
    if resource_type is None or resource_id is None:
        raise InvalidEntries(problems.listed, problems.total)
    return Upsert(resource_type, resource_id, resource)


# --- Bundles -------------------------------------------------------------------------------


def read_bundle(stream: BinaryIO, *, spool_dir: str | None = None) -> Iterator[Upsert | Delete]:
    """Yield a Bundle's resources and deletions, references resolved; when one resource comes
    more than once, its last entry comes out last.

    Raises SourceError when the input is not an accepted Bundle and InvalidEntries when any
    entry is bad, once the whole input is read: entries may have been yielded by then. The
    entries that wait for a fullUrl further on are spooled to memory up to SPOOL_MEMORY_BYTES,
    then to a temporary file in `spool_dir` (default: the system's).
    """
    return _read_bundle(stream.read, spool_dir=spool_dir)


def _read_bundle(
    read: Callable[[int], bytes], *, spool_dir: str | None
) -> Iterator[Upsert | Delete]:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, dir=spool_dir) as spool:
        reader = _BundleReader(spool)
        yield from reader.entries(read)
        yield from reader.waiting()


class _BundleReader:
    def __init__(self, spool: IO[bytes]) -> None:
        self.spool = spool
        self.header = _BundleHeader()
        self.full_urls = _FullUrls()
        self.problems = _Problems()
        self.placeholders_ahead: set[str] = set()  # urn: references not resolved when read
        self.waiting_at: dict[str, int] = {}  # "Type/id" -> index of its last spooled entry

    def entries(self, read: Callable[[int], bytes]) -> Iterator[Upsert | Delete]:
        """Check every entry; yield those that can be resolved when read, spool the others."""
        try:
            for event in iter_object(read, array_key="entry", max_value_chars=MAX_ENTRY_CHARS):
                if isinstance(event, Member):
                    self.header.note(event)
                elif isinstance(event, Item) and (item := self._take(event)) is not None:
                    yield item
        except JsonStreamError as error:
            raise SourceError(error.message, error.position.describe()) from None
        self.header.check_complete()
        if any(reference not in self.full_urls for reference in self.placeholders_ahead):
            _list_dangling_references(self.spool, self.full_urls, self.problems)
        self.problems.raise_any()

    def _take(self, event: Item) -> Upsert | Delete | None:
        where = f"entry[{event.index}]"
        if event.too_deep or nests_deeper_than(event.value, MAX_NESTING):
            self.problems.add(where, f"nested deeper than {MAX_NESTING} levels")
            return None
        action = _entry_action(event.value, where, self.problems)
        if action is None:
            return None
        if isinstance(action, Delete):
            return action if self._now(event.index, action, "", now=True) else None
        full_url = event.value.get("fullUrl")
        if full_url is not None:
            _note_full_url(full_url, action, where, self.full_urls, self.problems)
        resource, unknown = _resolve(event.text, self.full_urls, event.value)
        self.placeholders_ahead.update(u for u in unknown if u.startswith(_PLACEHOLDER_PREFIXES))
        if not self._now(event.index, action, event.text, now=not unknown):
            return None
        return _with_id(Upsert(action.resource_type, action.id, resource))

    def _now(self, index: int, action: Upsert | Delete, text: str, *, now: bool) -> bool:
        """Whether `action` comes out now; if not, it waits in the spool. Once a problem is
        found nothing more comes out, but entries are still spooled for the problem list."""
        key = f"{action.resource_type}/{action.id}"
        if now and self.header.complete and not self.problems.total:
            self.waiting_at.pop(key, None)  # an earlier entry for it is out of date
            return True
        self.waiting_at[key] = index
        _spool(self.spool, index, action, text)
        return False

    def waiting(self) -> Iterator[Upsert | Delete]:
        """The spooled entries, checked already: parsed again, with their references resolved."""
        for index, is_delete, resource_type, resource_id, text in _spooled(self.spool):
            if self.waiting_at.get(f"{resource_type}/{resource_id}") != index:
                continue  # a later entry for the same resource came out already
            if is_delete:
                yield Delete(resource_type, resource_id)
            else:
                resource, _ = _resolve(text, self.full_urls)
                yield _with_id(Upsert(resource_type, resource_id, resource))


def _with_id(upsert: Upsert) -> Upsert:
    """The resource with its id, when the id came from the entry's fullUrl."""
    if "id" in upsert.resource:
        return upsert
    resource = {"resourceType": upsert.resource_type, "id": upsert.id} | upsert.resource
    return Upsert(upsert.resource_type, upsert.id, resource)


def _resolve(
    text: str, full_urls: _FullUrls, entry: Any = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """An entry's resource, from its JSON `text`, with its references to known fullUrls
    rewritten to "Type/id"; and its absolute references no fullUrl read so far names.

    With `entry` (that text, parsed) the resource is None when some are not known yet: the
    entry waits, and is resolved again at the end."""
    if "\\" in text and _ESCAPED_REFERENCE.search(text):
        return _resolve_walking(text, full_urls, entry)
    unknown: list[str] = []
    changed = False

    def resolve(found: re.Match[str]) -> str:
        nonlocal changed
        reference = found[2]
        if not _ABSOLUTE_URI.match(reference):
            return found[0]
        target = full_urls.get(reference)
        if target is None:
            unknown.append(reference)
            return found[0]
        changed = True
        return f'{found[1]}{target}"'

    resolved = _PLAIN_REFERENCE.sub(resolve, text)
    if entry is not None:
        if unknown:
            return None, unknown
        if not changed:
            return entry["resource"], unknown
    return orjson.loads(resolved)["resource"], unknown


def _resolve_walking(
    text: str, full_urls: _FullUrls, entry: Any
) -> tuple[dict[str, Any] | None, list[str]]:
    """_resolve, by walking the parsed resource: for the rare entry with an escape in a
    reference, which the text cannot do."""
    unknown: list[str] = []
    resource = (orjson.loads(text) if entry is None else entry)["resource"]
    for holder, reference in _references(resource):
        if _ABSOLUTE_URI.match(reference):
            target = full_urls.get(reference)
            if target is None:
                unknown.append(reference)
            else:
                holder["reference"] = target
    return (None if unknown and entry is not None else resource), unknown


def _spool(spool: IO[bytes], index: int, action: Upsert | Delete, text: str) -> None:
    target = f"{action.resource_type}/{action.id}".encode()
    body = text.encode()
    frame = _FRAME.pack(index, isinstance(action, Delete), len(target), len(body))
    spool.write(frame + target + body)


def _spooled(spool: IO[bytes]) -> Iterator[tuple[int, bool, str, str, str]]:
    """(index, is a DELETE, resource type, id, entry JSON) for each spooled entry."""
    spool.seek(0)
    while frame := spool.read(_FRAME.size):
        index, is_delete, target_length, body_length = _FRAME.unpack(frame)
        resource_type, _, resource_id = spool.read(target_length).decode().partition("/")
        yield index, is_delete, resource_type, resource_id, spool.read(body_length).decode()


def _list_dangling_references(spool: IO[bytes], full_urls: _FullUrls, problems: _Problems) -> None:
    """Say where each placeholder reference that no fullUrl answers is (a rare, failing case,
    so the spool is read again rather than every reference's place kept)."""
    for index, is_delete, _, _, text in _spooled(spool):
        if is_delete:
            continue
        resource = orjson.loads(text)["resource"]
        for path, reference in _reference_paths(resource, f"entry[{index}].resource"):
            if reference.startswith(_PLACEHOLDER_PREFIXES) and reference not in full_urls:
                problems.add(path, f"{reference!r} is the fullUrl of no entry in this Bundle")


class _BundleHeader:
    """The Bundle's own members, wherever they come among the entries."""

    def __init__(self) -> None:
        self.resource_type: Any = None
        self.type: Any = None

    def note(self, member: Member) -> None:
        value = member.value
        where = member.position.describe()
        if member.key == "resourceType":
            self.resource_type = value
            if value != "Bundle":
                raise SourceError(f"expected a Bundle, not resourceType {value!r}", where)
        elif member.key == "type":
            self.type = value
            if value not in BUNDLE_TYPES:
                accepted = ", ".join(sorted(BUNDLE_TYPES))
                raise SourceError(f"Bundle type {value!r} is not accepted ({accepted})", where)
        elif member.key == "entry":
            raise SourceError("Bundle.entry must be an array", where)

    @property
    def complete(self) -> bool:
        return self.resource_type is not None and self.type is not None

    def check_complete(self) -> None:
        if self.resource_type is None:
            raise SourceError("not a FHIR resource: the JSON object has no resourceType")
        if self.type is None:
            raise SourceError("the Bundle has no type", "Bundle.type")


def _entry_action(entry: Any, where: str, problems: _Problems) -> Upsert | Delete | None:
    """What an entry asks for; None for an entry to skip or a bad one (added to `problems`)."""
    if not isinstance(entry, dict):
        problems.add(where, "an entry must be a JSON object")
        return None
    search = entry.get("search")
    if isinstance(search, dict) and search.get("mode") == "outcome":
        return None  # a searchset's OperationOutcome about the search, not data
    request = entry.get("request", {})
    if not isinstance(request, dict):
        problems.add(f"{where}.request", "request must be a JSON object")
        return None
    method = request.get("method")
    if method == "DELETE":
        return _delete_action(request.get("url"), f"{where}.request.url", problems)
    if method not in (None, "POST", "PUT"):
        problems.add(
            f"{where}.request.method",
            f"a {method!r} entry has nothing to load (only POST, PUT and DELETE entries do)",
        )
        return None
    if "resource" not in entry:
        problems.add(where, "the entry has no resource (only a DELETE entry may leave it out)")
        return None
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        problems.add(f"{where}.fullUrl", "fullUrl must be a string")
        return None
    resource = entry["resource"]
    resource_type, resource_id = _identify(resource, f"{where}.resource", problems, full_url)
    if resource_type is None or resource_id is None:
        return None
    restful = _RESTFUL_URL.fullmatch(full_url or "")
    if restful and (restful["type"], restful["id"]) != (resource_type, resource_id):
        problems.add(
            f"{where}.fullUrl",
            f"fullUrl {full_url!r} names another resource than {resource_type}/{resource_id}",
        )
        return None
    return Upsert(resource_type, resource_id, resource)


def _delete_action(url: Any, where: str, problems: _Problems) -> Delete | None:
    matched = _TYPE_AND_ID.fullmatch(url) if isinstance(url, str) else None
    if matched is None:
        problems.add(
            where, f"a DELETE needs a url 'Type/id', not {url!r} (conditional deletes are refused)"
        )
        return None
    return Delete(matched["type"], matched["id"])


def _note_full_url(
    full_url: str, action: Upsert, where: str, full_urls: _FullUrls, problems: _Problems
) -> None:
    previous = full_urls.add(full_url, action.resource_type, action.id)
    if previous is not None:
        problems.add(f"{where}.fullUrl", f"fullUrl {full_url!r} is also used for {previous}")


class _FullUrls:
    """fullUrl -> "Type/id", in about 100 bytes an entry for the usual case.

    That case is a canonical urn:uuid fullUrl whose resource has the uuid as its id (or none):
    it is kept as the uuid's 16 bytes -> the resource type, one string shared by all of a type.
    """

    def __init__(self) -> None:
        self._uuids: dict[bytes, str] = {}
        self._others: dict[str, str] = {}
        self._types: dict[str, str] = {}

    def get(self, full_url: str) -> str | None:
        key = _uuid_key(full_url)
        if key is not None and (resource_type := self._uuids.get(key)) is not None:
            return f"{resource_type}/{full_url[9:]}"
        return self._others.get(full_url)

    def __contains__(self, full_url: str) -> bool:
        return self.get(full_url) is not None

    def add(self, full_url: str, resource_type: str, resource_id: str) -> str | None:
        """Map `full_url`; or, when it already names another resource, return that one."""
        target = f"{resource_type}/{resource_id}"
        previous = self.get(full_url)
        if previous is not None:
            return None if previous == target else previous
        key = _uuid_key(full_url)
        if key is not None and resource_id == full_url[9:]:
            self._uuids[key] = self._types.setdefault(resource_type, resource_type)
        else:
            self._others[full_url] = target
        return None


def _uuid_key(full_url: str) -> bytes | None:
    if _CANONICAL_UUID_URN.fullmatch(full_url):
        return bytes.fromhex(full_url[9:].replace("-", ""))
    return None


# --- NDJSON --------------------------------------------------------------------------------


def read_ndjson(stream: BinaryIO) -> Iterator[Upsert | Delete]:
    """Yield one Upsert per line (blank lines skipped), checking every line.

    Bad lines raise InvalidEntries once the whole input is read. Unlike a Bundle, lines before
    the first bad one have been yielded by then (nothing is yielded after it): the caller loads
    in one transaction and rolls it back. A line longer than MAX_ENTRY_CHARS is a SourceError.
    """
    return _read_ndjson(stream.read)


def _read_ndjson(read: Callable[[int], bytes]) -> Iterator[Upsert | Delete]:
    problems = _Problems()
    any_line = False
    for number, line in _lines(read):
        if not line.strip():
            continue
        any_line = True
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        upsert = _ndjson_line(line, f"line {number}", problems)
        if upsert is not None and not problems.total:
            yield upsert
    if not any_line:
        raise SourceError("the input is empty", "byte 0")
    problems.raise_any()


def _ndjson_line(line: bytes, where: str, problems: _Problems) -> Upsert | None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        problems.add(where, f"not UTF-8 text at byte {error.start + 1} of the line")
        return None
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as error:
        problems.add(where, f"not valid JSON: {error.msg} at column {error.colno}")
        return None
    except RecursionError:  # far deeper than MAX_NESTING
        resource = _TOO_DEEP
    if resource is _TOO_DEEP or nests_deeper_than(resource, MAX_NESTING):
        problems.add(where, f"nested deeper than {MAX_NESTING} levels")
        return None
    resource_type, resource_id = _identify(resource, where, problems, name_fields=False)
    if resource_type is None or resource_id is None:
        return None
    return Upsert(resource_type, resource_id, resource)


def _lines(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) from the stream, one line in memory at a time."""
    buffer = bytearray()
    searched = number = 0
    while chunk := read(CHUNK_BYTES):
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", searched)) != -1:
            number += 1
            yield number, bytes(buffer[start:end])
            start = searched = end + 1
        del buffer[:start]
        searched = len(buffer)
        if len(buffer) > MAX_ENTRY_CHARS:
            limit = f"{MAX_ENTRY_CHARS:,}"
            raise SourceError(f"a line is longer than {limit} bytes", f"line {number + 1}")
    if buffer:
        yield number + 1, bytes(buffer)


# --- shared --------------------------------------------------------------------------------


def _identify(
    resource: Any,
    where: str,
    problems: _Problems,
    full_url: str | None = None,
    *,
    name_fields: bool = True,
) -> tuple[str | None, str | None]:
    """The resource's type and id (from a urn:uuid or RESTful fullUrl when it has none).

    Problems are placed at `where`, followed by the field's name with `name_fields`.
    """
    type_where = f"{where}.resourceType" if name_fields else where
    id_where = f"{where}.id" if name_fields else where
    if not isinstance(resource, dict):
        problems.add(where, "a resource must be a JSON object")
        return None, None
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
        message = "resourceType is missing" if resource_type is None else "is not a resource type"
        problems.add(type_where, f"{_shown(resource_type)} {message}".lstrip())
        return None, None
    resource_id = resource.get("id")
    if resource_id is None:
        resource_id = _id_from_full_url(full_url, resource_type)
        if resource_id is None:
            problems.add(id_where, _missing_id(full_url))
            return resource_type, None
    elif not isinstance(resource_id, str) or not _ID.fullmatch(resource_id):
        problems.add(
            id_where,
            f"{_shown(resource_id)} is not a FHIR id (1 to 64 letters, digits, '-' or '.')",
        )
        return resource_type, None
    return resource_type, resource_id


def _shown(value: Any) -> str:
    return "" if value is None else json.dumps(value)[:80]


def _id_from_full_url(full_url: str | None, resource_type: str) -> str | None:
    if full_url is None:
        return None
    if full_url.startswith("urn:uuid:") and _ID.fullmatch(full_url[9:]):
        return full_url[9:]
    restful = _RESTFUL_URL.fullmatch(full_url)
    if restful and restful["type"] == resource_type:
        return restful["id"]
    return None


def _missing_id(full_url: str | None) -> str:
    if full_url is None:
        return "id is missing"
    return f"id is missing, and fullUrl {full_url!r} gives none"


def _references(resource: dict) -> Iterator[tuple[dict, str]]:
    """Every (object, its "reference" string), however deep; without recursion."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            reference = node.get("reference")
            if isinstance(reference, str):
                yield node, reference
            stack.extend(value for value in node.values() if isinstance(value, dict | list))
        else:
            stack.extend(value for value in node if isinstance(value, dict | list))


def _reference_paths(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(FHIRPath-like place, reference) for every reference, in document order (recursive:
    only entries nested at most MAX_NESTING deep are spooled)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield f"{path}.reference", value
            elif isinstance(value, dict | list):
                yield from _reference_paths(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _reference_paths(value, f"{path}[{index}]")


class _Rewound:
    """The bytes already read from a stream, then the rest of it."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self._head = head
        self._read = read

    def read(self, size: int) -> bytes:
        if not self._head:
            return self._read(size)
        data, self._head = self._head[:size], self._head[size:]
        return data
