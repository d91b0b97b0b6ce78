"""A check of JPEG entropy-coded data, for the corruption that decoders pass over in silence.

``jpeg_problem(data, tables)`` returns None for a JPEG stream whose Huffman-coded scans decode
cleanly, else a sentence saying what is wrong and where.

# NOTE [Corrupt JPEG data]
libjpeg meets corrupt entropy-coded data (scrambled or zeroed bytes inside a scan) with a
*warning* ("Corrupt JPEG data: bad Huffman code", "premature end of data segment", "N
extraneous bytes before marker") and goes on decoding, so the image it returns is partly
garbage. Pillow and imagecodecs (tifffile's JPEG tiles) drop those warnings: a JPEG with 200
scrambled bytes decodes without a word, and a slide tile likewise. OpenSlide turns them into
errors. This module walks the same Huffman codes without the inverse DCT: each block's DC and AC
symbols must be codes of their tables, a block must end within its 64 coefficients, the scan must
hold exactly the MCUs the frame header implies and end on a marker (a restart interval on the
next RSTn marker), which is what those warnings check, and a little more (a run past the 64th
coefficient, which libjpeg ignores). Sequential Huffman JPEGs (SOF0, SOF1: what scanners,
Pillow, libjpeg and tifffile write) are checked; progressive, lossless and arithmetic-coded
ones are not (None: nothing found). The walk is compiled with numba (the first use compiles
it, cached next to the module); it costs a fraction of a decode.
"""

from __future__ import annotations

import copy
import functools

import numpy as np

__all__ = ["jpeg_problem"]

try:  # numba is a dependency; without it the check is skipped (None), never a failure
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = None  # type: ignore[assignment]

# error codes of the scan walk
_OK, _BAD_CODE, _PREMATURE, _OVERRUN, _EXTRANEOUS, _RESTART, _RANGE = range(7)
_WHAT = {
    _BAD_CODE: "a bad Huffman code",
    _PREMATURE: "a premature end of the data segment",
    _OVERRUN: "a run of coefficients past the end of a block",
    _EXTRANEOUS: "extraneous bytes before a marker",
    _RESTART: "a missing or out-of-order restart marker",
    _RANGE: "a coefficient out of range (8-bit samples cannot give it)",
}
_SOF_SEQUENTIAL = (0xC0, 0xC1)
_SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


class _Malformed(Exception):
    """The marker structure itself is broken (the decoder reports that as an error)."""


if njit is not None:

    @njit(cache=True, nogil=True)
    def _scan_blocks(data: np.ndarray, pos: int, n_mcus: int, restart: int, block_dc: np.ndarray,
                     block_ac: np.ndarray, block_comp: np.ndarray, quant: np.ndarray, bound: int,
                     maxcode: np.ndarray, valptr: np.ndarray, huffval: np.ndarray, look_len: np.ndarray,
                     look_sym: np.ndarray) -> tuple[int, int, int]:  # pragma: no cover - compiled
        """Walk ``n_mcus`` MCUs of a sequential scan from byte ``pos``.

        ``block_*``: each block of an MCU's DC and AC table slots and its component (a row of
        ``quant``, the dequantization values in zigzag order, 0 where unknown). A dequantized
        coefficient beyond ``bound`` (a DC predictor that drifted after corrupt bits) is out of
        range. Codes of up to 8 bits are looked up (``look_*``), longer ones decoded canonically.
        Returns (error code, MCU reached, byte position after the walk).
        """
        n = data.shape[0]
        acc = 0  # bit buffer: its low ``bits`` bits are unread, the lowest ``pad`` of them zeros
        bits = 0  # past a marker (or the end), which a decoder would feed it
        pad = 0
        marker = False
        mcu = 0
        pred = np.zeros(quant.shape[0], np.int64)
        while mcu < n_mcus:
            if restart > 0 and mcu > 0 and mcu % restart == 0:
                # the interval ends: the rest of its last byte is padding, then RSTn
                if bits - pad >= 8:
                    return _EXTRANEOUS, mcu, pos
                acc = 0
                bits = 0
                pad = 0
                marker = False
                pred[:] = 0
                if pos >= n or data[pos] != 0xFF:
                    return _EXTRANEOUS, mcu, pos
                while pos < n and data[pos] == 0xFF:
                    pos += 1
                if pos >= n or data[pos] != 0xD0 + ((mcu // restart - 1) % 8):
                    return _RESTART, mcu, pos
                pos += 1
            for b in range(block_dc.shape[0]):
                comp = block_comp[b]
                k = 0
                while k < 64:
                    if bits < 32:  # refill to at least 49 bits
                        while bits <= 48:
                            if not marker and pos < n:
                                byte = data[pos]
                                if byte == 0xFF:
                                    if pos + 1 < n and data[pos + 1] == 0:
                                        pos += 2
                                    else:
                                        marker = True
                                        acc <<= 8
                                        bits += 8
                                        pad += 8
                                        continue
                                else:
                                    pos += 1
                                acc = (acc << 8) | byte
                            else:
                                marker = True
                                acc <<= 8
                                pad += 8
                            bits += 8
                    table = block_dc[b] if k == 0 else block_ac[b]
                    peek = (acc >> (bits - 8)) & 0xFF
                    length = look_len[table, peek]
                    if length > 0:
                        sym = look_sym[table, peek]
                    else:
                        sym = -1
                        for length in range(9, 17):
                            code = (acc >> (bits - length)) & ((1 << length) - 1)
                            if code <= maxcode[table, length]:
                                sym = huffval[table, valptr[table, length] + code]
                                break
                        if sym < 0:
                            return _BAD_CODE, mcu, pos
                    bits -= length
                    if bits < pad:
                        return _PREMATURE, mcu, pos
                    if k == 0:
                        size = sym
                        if size > 16:
                            return _BAD_CODE, mcu, pos
                    else:
                        size = sym & 15
                        run = sym >> 4
                        if size == 0 and run != 15:
                            acc &= (1 << bits) - 1
                            break  # end of block
                        k += run
                        if k > 63:
                            return _OVERRUN, mcu, pos
                    value = 0
                    if size > 0:
                        value = (acc >> (bits - size)) & ((1 << size) - 1)
                        bits -= size
                        if bits < pad:
                            return _PREMATURE, mcu, pos
                        if value < (1 << (size - 1)):
                            value -= (1 << size) - 1
                    acc &= (1 << bits) - 1
                    if k == 0:
                        pred[comp] += value
                        value = pred[comp]
                    q = quant[comp, k]
                    if q > 0 and abs(value) * q > bound + q:
                        return _RANGE, mcu, pos
                    k += 1
            mcu += 1
        if bits - pad >= 8:
            return _EXTRANEOUS, mcu, pos
        return _OK, mcu, pos

else:  # pragma: no cover
    _scan_blocks = None


class _Tables:
    """Huffman tables by slot (DC 0-3, AC 4-7) as the walk's arrays (canonical decoding)."""

    def __init__(self) -> None:
        self.maxcode = np.full((8, 17), -1, np.int32)
        self.valptr = np.zeros((8, 17), np.int32)
        self.huffval = np.zeros((8, 256), np.int32)
        self.look_len = np.zeros((8, 256), np.int32)  # codes of <= 8 bits by their next 8 bits
        self.look_sym = np.zeros((8, 256), np.int32)
        self.defined = [False] * 8
        self.quant: dict[int, np.ndarray] = {}  # table id -> 64 values in zigzag order

    def define(self, slot: int, counts: bytes, values: bytes) -> None:
        code = k = 0
        self.look_len[slot] = 0
        for length in range(1, 17):
            n = counts[length - 1]
            self.valptr[slot, length] = k - code
            self.maxcode[slot, length] = code + n - 1 if n else -1
            for i in range(n):
                if length <= 8:
                    first = (code + i) << (8 - length)
                    self.look_len[slot, first : first + (1 << (8 - length))] = length
                    self.look_sym[slot, first : first + (1 << (8 - length))] = values[k + i]
            code += n
            k += n
            code <<= 1
        self.huffval[slot, : len(values)] = np.frombuffer(values, np.uint8)
        self.defined[slot] = True


def _segments(data: bytes, pos: int) -> tuple[int, int, int]:
    """(marker code, start of its payload, end of its payload) of the marker at ``pos``."""
    if pos + 2 > len(data) or data[pos] != 0xFF:
        raise _Malformed
    while pos + 1 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
        pos += 1
    if pos + 2 > len(data):
        raise _Malformed
    code = data[pos + 1]
    if code in (0xD8, 0xD9) or 0xD0 <= code <= 0xD7 or code == 0x01:
        return code, pos + 2, pos + 2
    if pos + 4 > len(data):
        raise _Malformed
    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    if length < 2 or pos + 2 + length > len(data):
        raise _Malformed
    return code, pos + 4, pos + 2 + length


def _read_dht(payload: bytes, tables: _Tables) -> None:
    i = 0
    while i < len(payload):
        if i + 17 > len(payload):
            raise _Malformed
        tc, th = payload[i] >> 4, payload[i] & 15
        counts = payload[i + 1 : i + 17]
        total = sum(counts)
        if tc > 1 or th > 3 or total > 256 or i + 17 + total > len(payload):
            raise _Malformed
        tables.define(tc * 4 + th, counts, payload[i + 17 : i + 17 + total])
        i += 17 + total


def _read_dqt(payload: bytes, tables: _Tables) -> None:
    i = 0
    while i < len(payload):
        pq, tq = payload[i] >> 4, payload[i] & 15
        size = 128 if pq else 64
        if pq > 1 or tq > 3 or i + 1 + size > len(payload):
            raise _Malformed
        dtype = ">u2" if pq else "u1"
        tables.quant[tq] = np.frombuffer(payload[i + 1 : i + 1 + size], dtype).astype(np.int64)
        i += 1 + size


def jpeg_problem(data: bytes | bytearray | memoryview, tables: bytes | None = None) -> str | None:
    """What is corrupt in the entropy-coded data of the JPEG stream ``data``, or None.

    ``tables`` is an abbreviated stream of tables (TIFF's JPEGTables) read before ``data``. None
    also for what is not checked: no numba, a progressive, lossless or arithmetic-coded JPEG, or
    a marker structure so broken that the decoder itself fails on it (NOTE [Corrupt JPEG data]).
    """
    if _scan_blocks is None:
        return None
    try:
        return _problem(bytes(data), tables)
    except _Malformed:
        return None


def _problem(data: bytes, tables_stream: bytes | None) -> str | None:
    # the tables every tile of a TIFF level shares are parsed once; a stream that defines its own
    # works on a copy
    tables = _shared_tables(bytes(tables_stream)) if tables_stream else _Tables()
    own = not tables_stream
    if data[:2] != b"\xff\xd8":
        raise _Malformed
    pos = 2
    frame: dict[int, tuple[int, int, int]] | None = None  # component id -> (h, v, quantization table)
    width = height = precision = 0
    restart = 0
    arr = np.frombuffer(data, np.uint8)
    while True:
        if pos >= len(data):
            return "corrupt JPEG data: the file ends before its end-of-image marker (truncated)"
        if data[pos] != 0xFF:
            raise _Malformed
        code, start, end = _segments(data, pos)
        payload = data[start:end]
        pos = end
        if code == 0xD9:
            return None
        if code in (0xC4, 0xDB) and not own:
            tables, own = copy.deepcopy(tables), True
        if code == 0xC4:
            _read_dht(payload, tables)
        elif code == 0xDB:
            _read_dqt(payload, tables)
        elif code == 0xDD:
            if len(payload) < 2:
                raise _Malformed
            restart = int.from_bytes(payload[:2], "big")
        elif code in _SOF_OTHER:
            return None  # progressive, lossless or arithmetic: not checked
        elif code in _SOF_SEQUENTIAL:
            if len(payload) < 6:
                raise _Malformed
            precision = payload[0]
            height, width, nf = int.from_bytes(payload[1:3], "big"), int.from_bytes(payload[3:5], "big"), payload[5]
            if height == 0 or width == 0 or nf == 0 or len(payload) < 6 + 3 * nf or precision not in (8, 12):
                return None  # a DNL height, or a header the decoder refuses
            frame = {}
            for c in range(nf):
                cid, hv, tq = payload[6 + 3 * c], payload[7 + 3 * c], payload[8 + 3 * c]
                h, v = hv >> 4, hv & 15
                if not (1 <= h <= 4 and 1 <= v <= 4):
                    return None
                frame[cid] = (h, v, tq)
        elif code == 0xDA:
            if frame is None or not payload:
                raise _Malformed
            ns = payload[0]
            if ns == 0 or len(payload) < 1 + 2 * ns + 3:
                raise _Malformed
            comps = []
            for c in range(ns):
                cid, td_ta = payload[1 + 2 * c], payload[2 + 2 * c]
                if cid not in frame:
                    raise _Malformed
                dc, ac = td_ta >> 4, td_ta & 15
                if dc > 3 or ac > 3 or not tables.defined[dc] or not tables.defined[4 + ac]:
                    return None  # a table the decoder defaults or refuses: not checked
                comps.append((cid, dc, 4 + ac))
            hmax = max(h for h, _, _ in frame.values())
            vmax = max(v for _, v, _ in frame.values())
            block_dc: list[int] = []
            block_ac: list[int] = []
            block_comp: list[int] = []
            quant = np.zeros((ns, 64), np.int64)  # 0: unknown, no range check
            for c, (cid, _, _) in enumerate(comps):
                q = tables.quant.get(frame[cid][2])
                if q is not None:
                    quant[c] = q
            if ns == 1:  # non-interleaved: one block per MCU
                cid, dc, ac = comps[0]
                h, v, _ = frame[cid]
                cols = _ceil_div(_ceil_div(width * h, hmax), 8)
                rows = _ceil_div(_ceil_div(height * v, vmax), 8)
                block_dc, block_ac, block_comp = [dc], [ac], [0]
                mcu_w, mcu_h = 8 * hmax // h, 8 * vmax // v
            else:
                cols, rows = _ceil_div(width, 8 * hmax), _ceil_div(height, 8 * vmax)
                for c, (cid, dc, ac) in enumerate(comps):
                    h, v, _ = frame[cid]
                    block_dc += [dc] * (h * v)
                    block_ac += [ac] * (h * v)
                    block_comp += [c] * (h * v)
                mcu_w, mcu_h = 8 * hmax, 8 * vmax
            n_mcus = cols * rows
            # |a coefficient| <= 8 * 2**(precision - 1) (NOTE [Corrupt JPEG data])
            err, mcu, pos = _scan_blocks(arr, pos, n_mcus, restart, np.array(block_dc, np.int32),
                                         np.array(block_ac, np.int32), np.array(block_comp, np.int32), quant,
                                         4 << precision, tables.maxcode, tables.valptr, tables.huffval,
                                         tables.look_len, tables.look_sym)
            if err == _OK and (pos >= len(data) or data[pos] != 0xFF):
                err = _EXTRANEOUS
            if err != _OK:
                x, y = (mcu % cols) * mcu_w, (mcu // cols) * mcu_h
                return (f"corrupt JPEG data: {_WHAT[err]} in MCU {mcu} of {n_mcus} (from about pixel x={x}, y={y} "
                        f"of {width} x {height}); the decoder fills in garbage from there")
        elif code == 0xD8 or 0xD0 <= code <= 0xD7:
            raise _Malformed
        # any other marker (APPn, COM, DQT, DNL, ...) is skipped


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=16)
def _shared_tables(stream: bytes) -> _Tables:
    """The tables of an abbreviated tables-only stream, parsed once (read-only: ``_problem`` copies
    before it changes them)."""
    tables = _Tables()
    _read_tables(stream, tables)
    return tables


def _read_tables(stream: bytes, tables: _Tables) -> None:
    """The Huffman tables of an abbreviated tables-only stream (SOI, DQT/DHT..., EOI)."""
    if stream[:2] != b"\xff\xd8":
        raise _Malformed
    pos = 2
    while pos < len(stream):
        code, start, end = _segments(stream, pos)
        if code == 0xD9:
            return
        if code == 0xC4:
            _read_dht(stream[start:end], tables)
        elif code == 0xDB:
            _read_dqt(stream[start:end], tables)
        pos = end
