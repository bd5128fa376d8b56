package cuda

// maxAlign is cuBLASLt's default assumption about every operand's alignment, in bytes.
const maxAlign = 256

// alignment returns the largest power of two, at most maxAlign, that divides the address p.
// Views into the model's flat weight and gradient buffers start at arbitrary element offsets,
// so a product's operands are often less aligned than cuBLASLt assumes unless it is told, and
// an algorithm chosen for 256-byte alignment fails or faults on them.
func alignment(p uint64) int {
	a := 1
	for a < maxAlign && p%uint64(2*a) == 0 {
		a *= 2
	}
	return a
}
