package plan

import "testing"

func TestPlanDPLink(t *testing.T) {
	c := config(t, "7b", 8, 0, 1)
	if link, bw := dpLink(c); link != "nvlink" || bw != 300e9*0.8 {
		t.Errorf("one node: %s %g", link, bw)
	}
	c.GPUs = 16
	if link, bw := dpLink(c); link != "ib-8x200" || !near(bw, 200e9/8*0.85, 1e-12) {
		t.Errorf("two nodes: %s %g, want a GPU's share of 8 x 200 Gb/s at 85%%", link, bw)
	}
	c.Fabric = Builtin().Fabrics["ib-4x200"]
	if _, bw := dpLink(c); !near(bw, 100e9/8*0.85, 1e-12) {
		t.Errorf("4 x 200 Gb/s: %g", bw)
	}
}

// With equal element sizes, ZeRO-1 and ZeRO-2 move what an all-reduce moves and ZeRO-3 1.5
// times as much (one micro-batch) less half the token embedding, which backward does not
// gather.
func TestPlanCommVolumes(t *testing.T) {
	const w = 256
	dp := func(zero, micro int) Comm {
		c := config(t, "7b", w, zero, 1).withSizes()
		c.Assume.GatherBytes = 4
		f, b := passTimes(c, micro)
		return commTime(c, micro, f, b)
	}
	plain := dp(0, 8)
	n := float64(localParams(config(t, "7b", w, 0, 1).withSizes()))
	if want := 2 * float64(w-1) / w * n * 4; !near(plain.Bytes, want, 1e-12) {
		t.Errorf("all-reduce bytes %g, want 2(W-1)/W * N * 4 = %g", plain.Bytes, want)
	}
	if !near(plain.DP, plain.Bytes/plain.Bandwidth, 1e-12) {
		t.Errorf("all-reduce %g s, bytes/bandwidth %g s", plain.DP, plain.Bytes/plain.Bandwidth)
	}
	m := config(t, "7b", w, 0, 1).Model
	z3 := 1.5 - float64(m.Vocab*m.Dim)/n/2
	for _, tc := range []struct {
		zero, micro int
		ratio       float64
	}{{1, 8, 1}, {2, 8, 1}, {3, 8, z3}, {2, 1, (8 + 1) / 2.0}, {3, 1, 8 * z3}} {
		if got := dp(tc.zero, tc.micro); !near(got.Bytes, tc.ratio*plain.Bytes, 1e-12) || !near(got.DP, tc.ratio*plain.DP, 1e-12) {
			t.Errorf("ZeRO-%d, micro-batch %d: %g bytes, want %g x plain", tc.zero, tc.micro, got.Bytes, tc.ratio)
		}
	}
}

func TestPlanCommOverlap(t *testing.T) {
	for zero := 0; zero <= 3; zero++ {
		c := config(t, "65b", 2048, zero, 8).withSizes()
		for _, overlap := range []float64{0, 0.5, 1} {
			c.Assume.Overlap = overlap
			f, b := passTimes(c, 8)
			cm := commTime(c, 8, f, b)
			if cm.DPHidden > overlap*cm.DP+1e-12 || cm.DPHidden > f+b+1e-12 {
				t.Errorf("ZeRO-%d overlap %g: %g s hidden of %g s behind %g s of compute", zero, overlap, cm.DPHidden, cm.DP, f+b)
			}
			if !near(cm.Exposed, cm.DP-cm.DPHidden+cm.TP, 1e-12) {
				t.Errorf("ZeRO-%d: exposed %g != %g - %g + %g", zero, cm.Exposed, cm.DP, cm.DPHidden, cm.TP)
			}
			if overlap == 0 && cm.DPHidden != 0 {
				t.Errorf("ZeRO-%d: %g s hidden without overlap", zero, cm.DPHidden)
			}
		}
	}
	// A small model on one node: the all-reduce hides behind backward up to the overlap.
	c := config(t, "1b", 8, 0, 1).withSizes()
	f, b := passTimes(c, 16)
	if cm := commTime(c, 16, f, b); !near(cm.DPHidden, 0.8*cm.DP, 1e-12) {
		t.Errorf("1b on one node: %g of %g s hidden, want 80%%", cm.DPHidden, cm.DP)
	}
}

// Megatron: 2 all-reduces of B*T*d activations per block forward and 2 backward.
func TestPlanCommTensorParallel(t *testing.T) {
	c := config(t, "65b", 2048, 3, 8).withSizes()
	perCollective := 2 * 7.0 / 8 * 8 * 2048 * 8192 * 2
	want := 4 * 80 * perCollective / (300e9 * 0.8)
	if got := tpCommTime(c, 8); !near(got, want, 1e-12) {
		t.Errorf("tp 8: %g s, want %g s", got, want)
	}
	c.Model.Remat = "full"
	if got := tpCommTime(c, 8); !near(got, want*6/4, 1e-12) {
		t.Errorf("tp 8, full remat: %g s, want %g s (the forward runs twice)", got, want*6/4)
	}
	c.TP = 1
	if got := tpCommTime(c, 8); got != 0 {
		t.Errorf("tp 1: %g s", got)
	}
}
