package shard

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A token shard file is a fixed 256-byte header followed by the tokens.
// All integers are little-endian.
//
//	offset size field
//	     0    8 magic "\x93HERDTOK"
//	     8    4 format version (uint32), currently 1
//	    12    4 token width in bytes (uint32): 2 (uint16 ids) or 4 (uint32 ids)
//	    16    8 token count (uint64)
//	    24    4 vocabulary size of the writing tokenizer (uint32)
//	    28    4 CRC-32C of the token bytes (uint32)
//	    32    2 tokenizer hash length n, 1..128 (uint16)
//	    34  128 tokenizer hash: n bytes, then zero bytes
//	   162   90 reserved, zero
//	   252    4 CRC-32C of header bytes [0, 252) (uint32)
//	   256      tokens: count * width bytes
//
// The width is 2 when the vocabulary has at most 65536 ids, else 4. Token
// streams are documents each followed by the EOS id; a document may continue
// in the next file of the same stream.
const (
	// HeaderSize is the size of the fixed header in bytes.
	HeaderSize = 256
	// FormatVersion is the version written by this package.
	FormatVersion = 1
	// MaxHashLen is the longest tokenizer hash a file can hold.
	MaxHashLen = 128
	// MaxVocab is the largest vocabulary a file can describe.
	MaxVocab = 1 << 31

	magic       = "\x93HERDTOK"
	offVersion  = 8
	offWidth    = 12
	offCount    = 16
	offVocab    = 24
	offDataCRC  = 28
	offHashLen  = 32
	offHash     = 34
	offHeadCRC  = HeaderSize - 4
	maxU16Vocab = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes a token shard file.
type Header struct {
	Version   int    // format version
	Width     int    // bytes per token: 2 or 4
	Count     int64  // number of tokens
	VocabSize int    // vocabulary size of the tokenizer that wrote the file
	DataCRC   uint32 // CRC-32C of the token bytes
	Hash      string // tokenizer hash
}

// widthFor returns the token width for a vocabulary size.
func widthFor(vocab int) int {
	if vocab <= maxU16Vocab {
		return 2
	}
	return 4
}

// marshal encodes h into a HeaderSize-byte block with its checksum.
func (h Header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[offVersion:], uint32(h.Version))
	binary.LittleEndian.PutUint32(b[offWidth:], uint32(h.Width))
	binary.LittleEndian.PutUint64(b[offCount:], uint64(h.Count))
	binary.LittleEndian.PutUint32(b[offVocab:], uint32(h.VocabSize))
	binary.LittleEndian.PutUint32(b[offDataCRC:], h.DataCRC)
	binary.LittleEndian.PutUint16(b[offHashLen:], uint16(len(h.Hash)))
	copy(b[offHash:offHash+MaxHashLen], h.Hash)
	binary.LittleEndian.PutUint32(b[offHeadCRC:], crc32.Checksum(b[:offHeadCRC], castagnoli))
	return b
}

// parseHeader decodes the first bytes of a file of the given size. b holds
// min(size, HeaderSize) bytes. The checks run in the order a reader needs
// them: magic, version, length, checksum, then field ranges.
func parseHeader(path string, b []byte, size int64) (Header, error) {
	if len(b) < len(magic) {
		return Header{}, fmt.Errorf("%w: %s: %d bytes, header needs %d", ErrTruncated, path, size, HeaderSize)
	}
	if string(b[:len(magic)]) != magic {
		return Header{}, fmt.Errorf("%w: %s: starts with %q", ErrMagic, path, b[:len(magic)])
	}
	if len(b) < offWidth {
		return Header{}, fmt.Errorf("%w: %s: %d bytes, header needs %d", ErrTruncated, path, size, HeaderSize)
	}
	if v := binary.LittleEndian.Uint32(b[offVersion:]); v != FormatVersion {
		return Header{}, fmt.Errorf("%w: %s: version %d, this build reads %d", ErrVersion, path, v, FormatVersion)
	}
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %s: %d bytes, header needs %d", ErrTruncated, path, size, HeaderSize)
	}
	want := binary.LittleEndian.Uint32(b[offHeadCRC:])
	if got := crc32.Checksum(b[:offHeadCRC], castagnoli); got != want {
		return Header{}, fmt.Errorf("%w: %s: computed %08x, stored %08x", ErrHeaderChecksum, path, got, want)
	}
	h, err := headerFields(b)
	if err != nil {
		return Header{}, fmt.Errorf("%w: %s: %v", ErrHeader, path, err)
	}
	return h, nil
}

// headerFields decodes and range-checks the fields of a checksummed header.
func headerFields(b []byte) (Header, error) {
	width := binary.LittleEndian.Uint32(b[offWidth:])
	count := binary.LittleEndian.Uint64(b[offCount:])
	vocab := binary.LittleEndian.Uint32(b[offVocab:])
	hashLen := int(binary.LittleEndian.Uint16(b[offHashLen:]))
	switch {
	case width != 2 && width != 4:
		return Header{}, fmt.Errorf("token width %d, want 2 or 4", width)
	case count > 1<<62:
		return Header{}, fmt.Errorf("token count %d too large", count)
	case vocab == 0 || vocab > MaxVocab:
		return Header{}, fmt.Errorf("vocabulary size %d, want 1..%d", vocab, MaxVocab)
	case width == 2 && vocab > maxU16Vocab:
		return Header{}, fmt.Errorf("vocabulary size %d does not fit token width 2", vocab)
	case hashLen == 0 || hashLen > MaxHashLen:
		return Header{}, fmt.Errorf("tokenizer hash length %d, want 1..%d", hashLen, MaxHashLen)
	}
	return Header{
		Version:   FormatVersion,
		Width:     int(width),
		Count:     int64(count),
		VocabSize: int(vocab),
		DataCRC:   binary.LittleEndian.Uint32(b[offDataCRC:]),
		Hash:      string(b[offHash : offHash+hashLen]),
	}, nil
}

// putTokens encodes tokens into dst at the given width; dst must be large enough.
func putTokens(dst []byte, tokens []int32, width int) {
	if width == 2 {
		for i, t := range tokens {
			binary.LittleEndian.PutUint16(dst[2*i:], uint16(t))
		}
		return
	}
	for i, t := range tokens {
		binary.LittleEndian.PutUint32(dst[4*i:], uint32(t))
	}
}

// getTokens decodes len(dst) tokens from src and returns the index of the
// first id outside [0, vocab), or -1 when all are in range. Ids of 2^31 and
// above decode as negative int32 and so count as outside.
func getTokens(dst []int32, src []byte, width int, vocab int) int {
	if width == 2 {
		for i := range dst {
			dst[i] = int32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	} else {
		for i := range dst {
			dst[i] = int32(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
	for i, t := range dst {
		if t < 0 || int64(t) >= int64(vocab) {
			return i
		}
	}
	return -1
}
