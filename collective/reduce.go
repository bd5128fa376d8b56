package collective

// addTo adds src into dst elementwise. The inner loops of every reduction run here.
func addTo(dst, src []float32) {
	if len(src) != len(dst) {
		panic("collective: addTo length mismatch")
	}
	for len(dst) >= 8 {
		d, s := dst[:8:8], src[:8:8]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
		d[4] += s[4]
		d[5] += s[5]
		d[6] += s[6]
		d[7] += s[7]
		dst, src = dst[8:], src[8:]
	}
	for i := range dst {
		dst[i] += src[i]
	}
}

// divide divides every element of dst by n; it turns a sum of n ranks into their average.
func divide(dst []float32, n int) {
	f := float32(n)
	for i := range dst {
		dst[i] /= f
	}
}
