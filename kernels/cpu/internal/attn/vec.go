package attn

// useVector lets rows take the assembly loops of vec_amd64.go where the CPU, the element type
// and D allow. Tests turn it off to check the Go loops on the same machine.
var useVector = true

// dot returns sum_i a[i]*b[i] over len(a) elements, with four interleaved accumulators
// (lanes i mod 4) that are added as (s0+s1)+(s2+s3) at the end.
func dot[T Float](a, b []T) T {
	b = b[:len(a)]
	var s0, s1, s2, s3 T
	for len(a) >= 4 && len(b) >= 4 { // the second test only lets the compiler drop bounds checks
		s0 += a[0] * b[0]
		s1 += a[1] * b[1]
		s2 += a[2] * b[2]
		s3 += a[3] * b[3]
		a, b = a[4:], b[4:]
	}
	b = b[:len(a)]
	for i, x := range a {
		s0 += x * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy adds a*x to y (len(y) elements).
func axpy[T Float](y []T, a T, x []T) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// axpy4 adds (a0*x0 + a1*x1) + (a2*x2 + a3*x3) to y (len(y) elements), reading and writing
// y once for four rows.
func axpy4[T Float](y []T, a0, a1, a2, a3 T, x0, x1, x2, x3 []T) {
	n := len(y)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	for i := range y {
		y[i] += (a0*x0[i] + a1*x1[i]) + (a2*x2[i] + a3*x3[i])
	}
}
