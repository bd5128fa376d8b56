package attn

import (
	"math"
	"unsafe"
)

// exp returns e^x in T's precision. float64 uses math.Exp. float32 uses expf, which never
// leaves float32: the softmax calls it once per score, and at D = 16 the round trip through
// math.Exp costs about a quarter of the forward pass.
func exp[T Float](x T) T {
	if unsafe.Sizeof(x) == 4 {
		return T(expf(float32(x)))
	}
	return T(math.Exp(float64(x)))
}

// expf is Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts so that
// n*ln2 is exact), e^r by a degree-7 polynomial, then scaled by 2^n. Its error is within
// 2 ulp of the rounded result. Results that would be subnormal (x < -87.33) are 0.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
		maxX  = 88.72283905206835 // ln(MaxFloat32)
		minX  = -87.33654475      // ln(smallest normal float32)
	)
	switch {
	case x != x || x > maxX:
		return x * float32(math.Inf(1)) // NaN stays NaN, large x gives +Inf
	case x < minX:
		return 0
	}
	t := float32(x*log2e) + 0.5
	n := int32(t)
	if float32(n) > t { // int32() truncates toward zero: make it floor
		n--
	}
	fn := float32(n)
	r := float32(x - float32(fn*ln2Hi))
	r = float32(r - float32(fn*ln2Lo))
	p := float32(1.9875691500e-4)
	p = float32(p*r) + 1.3981999507e-3
	p = float32(p*r) + 8.3334519073e-3
	p = float32(p*r) + 4.1665795894e-2
	p = float32(p*r) + 1.6666665459e-1
	p = float32(p*r) + 5.0000001201e-1
	e := float32(float32(p*r)*r) + r + 1
	if n > 127 { // 2^128 is not a float32; e < 1 there, so e*2 * 2^127 is
		e, n = e*2, n-1
	}
	return e * math.Float32frombits(uint32(n+127)<<23)
}
