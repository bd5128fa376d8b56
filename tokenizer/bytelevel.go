package tokenizer

import (
	"unicode/utf8"
)

// The byte-level alphabet of GPT-2 (bytes_to_unicode in openai/gpt-2 and in the
// tokenizers library). Every byte maps to one printable rune: the printable Latin-1
// bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' map to themselves, the remaining 68 bytes
// (controls, space, DEL, NBSP, soft hyphen...) map in byte order to U+0100, U+0101, ...
// A space therefore appears as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A) in the
// vocabulary strings of tokenizer.json.
var (
	byteToRune [256]rune
	runeToByte map[rune]byte
	// byteOrder lists the 256 bytes sorted by their rune, the order in which the byte
	// tokens take ids (first byte token: '!').
	byteOrder [256]byte
)

func init() {
	runeToByte = make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if printableLatin1(byte(b)) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
	i := 0
	for b := 0; b < 256; b++ {
		if printableLatin1(byte(b)) {
			byteOrder[i] = byte(b)
			i++
		}
	}
	for b := 0; b < 256; b++ {
		if !printableLatin1(byte(b)) {
			byteOrder[i] = byte(b)
			i++
		}
	}
}

func printableLatin1(b byte) bool {
	return ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
}

// byteLevelString maps raw token bytes to the string that names the token in
// tokenizer.json.
func byteLevelString(raw []byte) string {
	buf := make([]byte, 0, 2*len(raw))
	for _, b := range raw {
		buf = utf8.AppendRune(buf, byteToRune[b])
	}
	return string(buf)
}

// byteLevelBytes inverts byteLevelString. It reports false when s holds a rune
// outside the byte-level alphabet.
func byteLevelBytes(s string) ([]byte, bool) {
	raw := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeToByte[r]
		if !ok {
			return nil, false
		}
		raw = append(raw, b)
	}
	return raw, true
}
