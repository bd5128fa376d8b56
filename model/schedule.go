package model

import (
	"fmt"
	"math"
)

// Schedule is LLaMA's learning-rate schedule: linear warmup from 0 to PeakLR over
// WarmupSteps, then cosine decay to MinRatio*PeakLR at TotalSteps, constant after.
type Schedule struct {
	PeakLR      float64 `json:"peak_lr"`
	WarmupSteps int     `json:"warmup_steps"`
	TotalSteps  int     `json:"total_steps"`
	MinRatio    float64 `json:"min_ratio"` // LLaMA: 0.1
}

// Validate names the first bad field.
func (s Schedule) Validate() error {
	switch {
	case !(s.PeakLR > 0):
		return fmt.Errorf("%w: peak_lr = %g, must be > 0", ErrConfig, s.PeakLR)
	case s.WarmupSteps < 0:
		return fmt.Errorf("%w: warmup_steps = %d, must be >= 0", ErrConfig, s.WarmupSteps)
	case s.TotalSteps <= 0:
		return fmt.Errorf("%w: total_steps = %d, must be > 0", ErrConfig, s.TotalSteps)
	case s.WarmupSteps > s.TotalSteps:
		return fmt.Errorf("%w: warmup_steps = %d exceeds total_steps = %d", ErrConfig, s.WarmupSteps, s.TotalSteps)
	case !(s.MinRatio >= 0 && s.MinRatio <= 1):
		return fmt.Errorf("%w: min_ratio = %g, must be in [0, 1]", ErrConfig, s.MinRatio)
	}
	return nil
}

// LR returns the learning rate of 0-based step.
func (s Schedule) LR(step int) float64 {
	if step < s.WarmupSteps {
		return s.PeakLR * float64(step+1) / float64(s.WarmupSteps)
	}
	if step >= s.TotalSteps {
		return s.PeakLR * s.MinRatio
	}
	span := s.TotalSteps - s.WarmupSteps
	progress := float64(step-s.WarmupSteps) / float64(max(span, 1))
	cos := 0.5 * (1 + math.Cos(math.Pi*progress))
	return s.PeakLR * (s.MinRatio + (1-s.MinRatio)*cos)
}
