package plan

import (
	"math"
	"strconv"
	"strings"
)

// Size multipliers: token budgets are decimal (LLaMA's 1.4T tokens is 1.4e12), batch sizes
// binary (LLaMA's 4M-token batch is 2048 sequences of 2048, 4 x 2^20).
const (
	Decimal = 1000
	Binary  = 1024
)

// ParseSize parses a positive number with an optional K, M, G or T suffix (any case), each
// a power of base: ParseSize("1.4T", Decimal) = 1.4e12, ParseSize("4M", Binary) = 4194304.
// The error names flag.
func ParseSize(flag, s string, base float64) (float64, error) {
	num, mult := s, 1.0
	if i := strings.IndexAny(strings.ToUpper(s), "KMGT"); i >= 0 && i == len(s)-1 {
		num = s[:i]
		mult = math.Pow(base, float64(strings.IndexByte("KMGT", strings.ToUpper(s)[i])+1))
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, flagErr(flag, "%q: want a positive number with an optional K, M, G or T suffix (%s)", s, sizeExample(base))
	}
	return v * mult, nil
}

func sizeExample(base float64) string {
	if base == Binary {
		return "powers of 1024 here: 4M = 4,194,304"
	}
	return "powers of 1000 here: 1.4T = 1.4e12"
}
