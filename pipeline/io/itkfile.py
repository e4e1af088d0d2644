"""MetaImage (``.mhd``/``.mha``) and NRRD (``.nrrd``/``.nhdr``) through SimpleITK.

The headers are checked first, so that the faults ITK reports badly (missing or truncated data
files, binary junk named ``.mhd``, impossible sizes) get a one-line reason; ITK's own exception
text is never shown to the user (it is logged at DEBUG). Returns a
:class:`~pipeline.io.image.Volume`: (z, y, x) array, xyz origin/spacing (mm)/direction.
"""
from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.formats import itk_readable_path
from pipeline.io.image import Volume, quiet_itk, sitk_to_volume

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 1 << 20  # a detached MetaImage/NRRD header is a few hundred bytes
MAX_VOXELS = 1 << 31        # 2^31 voxels (4 GiB as int16): far beyond any CT
_MET_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4,
              "MET_INT": 4, "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG": 8, "MET_ULONG": 8,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8}
_NRRD_BYTES = {**dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8",
                                "uint8_t"), 1),
               **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16",
                                "int16_t", "ushort", "unsigned short", "unsigned short int", "uint16",
                                "uint16_t"), 2),
               **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int",
                                "uint32", "uint32_t", "float"), 4),
               **dict.fromkeys(("longlong", "long long", "long long int", "signed long long",
                                "signed long long int", "int64", "int64_t", "ulonglong",
                                "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                                "double"), 8)}
_FMT_NAME = {"mhd": "MetaImage", "nrrd": "NRRD"}


def _header_text(path: Path, data: bytes, what: str) -> str:
    if b"\x00" in data:
        raise DataError(path, f"not a readable {what} header (binary data where text is expected)")
    return data.decode("utf-8", errors="replace")


def _dims(path: Path, text: str, key: str, ndims: int | None) -> list[int]:
    try:
        dims = [int(v) for v in text.split()]
    except ValueError:
        raise DataError(path, f"header field {key} = '{text[:40]}' is not a list of whole numbers") from None
    if not dims or min(dims) < 1:
        raise DataError(path, f"header field {key} = '{text[:40]}' needs positive sizes")
    if ndims is not None and len(dims) != ndims:
        raise DataError(path, f"truncated or inconsistent header: {key} has {len(dims)} values, dimension is {ndims}")
    if int(np.prod(dims, dtype=np.float64)) > MAX_VOXELS:
        raise DataError(path, f"header size {key} = {' x '.join(map(str, dims))} is implausibly large "
                              f"(more than {MAX_VOXELS} voxels)")
    return dims


def _check_data_size(path: Path, data_label: str, actual: int, expected: int) -> None:
    if actual < expected:
        raise DataError(path, f"truncated data file {data_label}: expected {expected} bytes, found {actual}")


def _check_decompressed(path: Path, raw: Path, label: str, expected: int) -> None:
    """A compressed (zlib/gzip) data file must decompress to exactly ``expected`` bytes: ITK fills a
    short stream up with zeros (0 HU slices) without a word when CompressedDataSize is absent."""
    d = zlib.decompressobj(47)  # zlib or gzip header, detected
    total = 0
    try:
        with open(raw, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(d.decompress(chunk))
                if d.eof or total > expected:
                    break
            total += len(d.flush())
    except zlib.error:
        raise DataError(path, f"compressed data file '{label}' is corrupt (not a valid zlib/gzip stream)") from None
    if not d.eof or total < expected:
        raise DataError(path, f"truncated compressed data file '{label}': it decompresses to {total} bytes, "
                              f"the header's size needs {expected}")
    if total > expected:
        raise DataError(path, f"compressed data file '{label}' holds more than the header's {expected} bytes; "
                              "header and data do not belong together")


def check_mhd_header(path: Path) -> None:
    """MetaImage header faults -> DataError; a data file outside the header's folder -> warning."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, "empty file (0 bytes)")
    local_ok = path.suffix.lower() == ".mha"
    if size > MAX_HEADER_BYTES and not local_ok:
        raise DataError(path, f"header is {size} bytes; a MetaImage .mhd header is a short text file")
    with open(path, "rb") as f:
        data = f.read(MAX_HEADER_BYTES)
    if local_ok and b"ElementDataFile" in data:  # .mha: the header ends at ElementDataFile's line
        end = data.index(b"ElementDataFile")
        nl = data.find(b"\n", end)
        data = data[: nl + 1 if nl >= 0 else len(data)]
    text = _header_text(path, data, "MetaImage")
    header: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            header[k.strip()] = v.strip()
    if "DimSize" not in header and "ElementDataFile" not in header:
        raise DataError(path, "not a readable MetaImage header (no DimSize or ElementDataFile line)")
    data_file = header.get("ElementDataFile")
    if not data_file:
        raise DataError(path, "MetaImage header has no ElementDataFile (truncated header?)")
    if "DimSize" not in header:
        raise DataError(path, "MetaImage header has no DimSize (truncated header?)")
    ndims = header.get("NDims")
    try:
        nd = int(ndims) if ndims is not None else None
    except ValueError:
        raise DataError(path, f"header field NDims = '{ndims[:20]}' is not a whole number") from None
    dims = _dims(path, header["DimSize"], "DimSize", nd)
    etype = header.get("ElementType", "")
    if etype not in _MET_BYTES:
        raise DataError(path, f"unsupported or missing ElementType '{etype[:30]}'; expected one of "
                              f"{', '.join(sorted(_MET_BYTES))}")
    if "ElementSpacing" in header or "ElementSize" in header:
        raw_sp = header.get("ElementSpacing", header.get("ElementSize", ""))
        try:
            sp = [float(v) for v in raw_sp.split()]
        except ValueError:
            raise DataError(path, f"header field ElementSpacing = '{raw_sp[:40]}' is not a list of numbers") from None
        if any(not np.isfinite(v) or v <= 0 for v in sp):  # ITK would take |v| or refuse with its own text
            shown = "(" + ", ".join(f"{v:g}" for v in sp) + ")"
            raise DataError(path, f"voxel spacing (x, y, z) = {shown} mm: every spacing must be a positive number")
    compressed = header.get("CompressedData", "False").lower() == "true"
    expected = int(np.prod(dims)) * _MET_BYTES[etype] * int(header.get("ElementNumberOfChannels", "1") or 1)
    if data_file.upper() == "LOCAL":
        if not compressed:
            _check_data_size(path, "(data inside the header file)", size - len(data), expected)
        return
    if " " in data_file or data_file.upper().startswith("LIST"):
        return  # slice-file patterns / lists: ITK resolves them
    raw = Path(data_file) if os.path.isabs(data_file) else path.parent / data_file
    if not raw.is_file():
        raise DataError(path, f"header points to missing data file '{data_file}'")
    folder = os.path.realpath(path.parent)
    if os.path.commonpath([folder, os.path.realpath(raw)]) != folder:
        log.warning("%s: data file '%s' lies outside the header's folder; moving or sharing the folder "
                    "will break this scan", path, data_file)
    if compressed:
        csize = header.get("CompressedDataSize")
        if csize and csize.isdigit():
            _check_data_size(path, f"'{data_file}'", raw.stat().st_size, int(csize))
        _check_decompressed(path, raw, data_file, expected)
        return
    _check_data_size(path, f"'{data_file}'", raw.stat().st_size, expected)


def check_nrrd_header(path: Path) -> None:
    """NRRD faults ITK reports badly: no magic, binary header, truncated raw data."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, "empty file (0 bytes)")
    with open(path, "rb") as f:
        data = f.read(min(size, MAX_HEADER_BYTES))
    if not data.startswith(b"NRRD000"):
        raise DataError(path, "not a readable NRRD header (the file does not start with 'NRRD000')")
    end = data.find(b"\n\n")
    head = data if end < 0 else data[:end]
    text = _header_text(path, head, "NRRD")
    fields: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.lstrip("=").strip()
    if "sizes" not in fields or "type" not in fields:
        raise DataError(path, "not a readable NRRD header (no 'sizes' or 'type' field; truncated header?)")
    dim = fields.get("dimension")
    dims = _dims(path, fields["sizes"], "sizes", int(dim) if dim and dim.isdigit() else None)
    nbytes = _NRRD_BYTES.get(fields["type"].lower())
    if nbytes is None or fields.get("encoding", "").lower() != "raw":
        return
    expected = int(np.prod(dims)) * nbytes
    df = fields.get("data file", fields.get("datafile"))
    if df:
        raw = Path(df) if os.path.isabs(df) else path.parent / df
        if not raw.is_file():
            raise DataError(path, f"header points to missing data file '{df}'")
        _check_data_size(path, f"'{df}'", raw.stat().st_size, expected)
    elif end >= 0:
        _check_data_size(path, "(data inside the NRRD file)", size - (end + 2), expected)


def read_itk_file(path: Path, fmt: str) -> Volume:
    """Read a ``.mhd/.mha`` (fmt ``'mhd'``) or ``.nrrd/.nhdr`` (fmt ``'nrrd'``) file."""
    import SimpleITK as sitk

    quiet_itk()
    if fmt == "mhd":
        check_mhd_header(path)
    else:
        check_nrrd_header(path)
    try:
        with itk_readable_path(path) as name:
            image = sitk.ReadImage(name)
    except RuntimeError as exc:
        log.debug("%s: SimpleITK: %s", path, " ".join(str(exc).split())[:500])
        raise DataError(path, f"not a readable {_FMT_NAME[fmt]} image (header or data damaged)") from None
    return sitk_to_volume(image, path)
