"""BLAKE3 (unkeyed hash, 32-byte output), written from the BLAKE3 paper.

Slow (pure Python) but small; the journal hashes 12-byte headers and frames
of a few kilobytes. Only what the journal needs: hash(data) -> 32 bytes.
"""

IV = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)
PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
BLOCK_LEN, CHUNK_LEN = 64, 1024
MASK = 0xFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & MASK


def _g(s, a, b, c, d, mx, my):
    s[a] = (s[a] + s[b] + mx) & MASK
    s[d] = _rotr(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK
    s[b] = _rotr(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b] + my) & MASK
    s[d] = _rotr(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK
    s[b] = _rotr(s[b] ^ s[c], 7)


def _compress(cv, block, counter, block_len, flags):
    """The compression function: 16 output words (the first 8 are the new CV)."""
    m = [int.from_bytes(block[i:i + 4], "little") for i in range(0, BLOCK_LEN, 4)]
    s = list(cv) + list(IV[:4]) + [counter & MASK, (counter >> 32) & MASK, block_len, flags]
    for r in range(7):
        # Columns, then diagonals.
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[p] for p in PERMUTATION]
    for i in range(8):
        s[i] ^= s[i + 8]
        s[i + 8] ^= cv[i]
    return s


def _chunk_output(chunk, index):
    """The last block's compression inputs of one chunk (ROOT not yet decided)."""
    cv = IV
    blocks = [chunk[i:i + BLOCK_LEN] for i in range(0, len(chunk), BLOCK_LEN)] or [b""]
    for n, block in enumerate(blocks):
        flags = (CHUNK_START if n == 0 else 0) | (CHUNK_END if n == len(blocks) - 1 else 0)
        padded = block.ljust(BLOCK_LEN, b"\0")
        if n == len(blocks) - 1:
            return (cv, padded, index, len(block), flags)
        cv = _compress(cv, padded, index, BLOCK_LEN, flags)[:8]


def _node_output(data, first_chunk):
    """Compression inputs of the root of the subtree over `data`: the left
    subtree holds the largest power of two of chunks that leaves at least
    one byte to the right."""
    if len(data) <= CHUNK_LEN:
        return _chunk_output(data, first_chunk)
    chunks = (len(data) + CHUNK_LEN - 1) // CHUNK_LEN
    left = 1
    while left * 2 < chunks:
        left *= 2
    split = left * CHUNK_LEN
    lcv = _cv(_node_output(data[:split], first_chunk))
    rcv = _cv(_node_output(data[split:], first_chunk + left))
    block = b"".join(w.to_bytes(4, "little") for w in lcv + rcv)
    return (IV, block, 0, BLOCK_LEN, PARENT)


def _cv(out):
    cv, block, counter, block_len, flags = out
    return _compress(cv, block, counter, block_len, flags)[:8]


def hash(data):  # noqa: A001 - the name the paper gives it
    cv, block, counter, block_len, flags = _node_output(bytes(data), 0)
    words = _compress(cv, block, counter, block_len, flags | ROOT)[:8]
    return b"".join(w.to_bytes(4, "little") for w in words)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        with open(name, "rb") as f:
            print(hash(f.read()).hex() + "  " + name)
