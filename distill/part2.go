package distill

import (
	"fmt"
	"math"
)

// Meta-learning and kernel methods (survey §3, issue 8).
const (
	MethodKIP   = "kip"   // kernel inducing points (Nguyen et al.; eq. 14–15)
	MethodRFAD  = "rfad"  // random-feature NNGP approximation, Platt loss (Loo et al.; eq. 16)
	MethodFRePo = "frepo" // last-layer KRR on a pool of online-trained networks (Zhou et al.; eq. 17–18)
	MethodDD    = "dd"    // backpropagation through unrolled training (Wang et al.; eq. 8–11)
	MethodSLDD  = "sldd"  // DD with learnable soft labels (Sucholutsky & Schonlau)
	MethodLD    = "ld"    // label distillation only (Bohdal et al.)
)

// part2Methods lists the methods of this file in a fixed order.
func part2Methods() []string {
	return []string{MethodKIP, MethodRFAD, MethodFRePo, MethodDD, MethodSLDD, MethodLD, MethodLinBa, MethodIDC, MethodHaBa, MethodKFS, MethodGTN, MethodITGAN}
}

// HasFactors reports whether method learns factors (bases, codes,
// decoders or a generator) that it decodes into its images; its
// distiller's SaveFactors writes them, and fedsim distill puts them in
// factors.npz beside synthetic.npz.
func HasFactors(method string) bool {
	switch method {
	case MethodLinBa, MethodIDC, MethodHaBa, MethodKFS, MethodGTN, MethodITGAN:
		return true
	}
	return false
}

// IsKRRMethod reports whether method is a kernel-ridge-regression method
// (kip, rfad, frepo), configured by Config.KRR.
func IsKRRMethod(method string) bool {
	return method == MethodKIP || method == MethodRFAD || method == MethodFRePo
}

// IsMetaMethod reports whether method backpropagates through unrolled
// training (dd, sldd, ld, linba), configured by Config.Meta.
func IsMetaMethod(method string) bool {
	return method == MethodDD || method == MethodSLDD || method == MethodLD || method == MethodLinBa
}

// Kernels of KIP (KRRConfig.Kernel).
const (
	KernelFC   = "fc"   // fully connected ReLU network
	KernelConv = "conv" // convolutional ReLU network, flatten readout
)

// KRRConfig configures the kernel methods. Zero values select the defaults
// listed per field.
type KRRConfig struct {
	// Kernel (kip): KernelFC (default) or KernelConv; Depth its hidden
	// layers (default 3 for fc, 2 for conv); NNGP selects the NNGP kernel
	// instead of the NTK. WVar and BVar are σ_w² and σ_b² (default 2 and
	// 0.01).
	Kernel string  `json:"kernel,omitempty"`
	Depth  int     `json:"depth,omitempty"`
	NNGP   bool    `json:"nngp,omitempty"`
	WVar   float64 `json:"wvar,omitempty"`
	BVar   float64 `json:"bvar,omitempty"`
	// Reg is the ridge λ relative to the mean diagonal of K_ss
	// (default 1e-6 for kip and frepo, 1e-4 for rfad's low-rank kernel).
	Reg float64 `json:"reg,omitempty"`
	// LearnLabels also learns the support labels (regression targets,
	// initialised as one-hot minus 1/K); LRLabel is their Adam learning
	// rate (default 0.01). synthetic.npz then carries them as y_soft
	// logits, scaled by ln(9(K−1)) so that an initial label gives its
	// class probability 0.9.
	LearnLabels bool    `json:"learn_labels,omitempty"`
	LRLabel     float64 `json:"lr_label,omitempty"`
	// Chunk is the number of targets whose kernel rows are built at once
	// (kip; default all for fc, 64 for conv): same gradient, bounded
	// memory.
	Chunk int `json:"chunk,omitempty"`
	// Models is rfad's number of random networks per iteration (default
	// 4) and frepo's pool size (default 4); Width their channels (rfad
	// default 64; frepo uses Config.Model).
	Models int `json:"models,omitempty"`
	Width  int `json:"width,omitempty"`
	// MaxAge (frepo) is how many online steps a pool network takes on the
	// synthetic set before it is re-initialised (default 100).
	MaxAge int `json:"max_age,omitempty"`
	// CosineIters, if positive, decays the Adam rates of the images and
	// labels from LRImg and LRLabel to zero along a half cosine over that
	// many iterations (zero after); 0 keeps them constant, as KIP's code
	// does. A constant rate leaves the set wandering around its optimum
	// (KIP MNIST IPC 10 moves ±0.1 points between checkpoints); the decay
	// lets the last iterations settle it.
	CosineIters int `json:"cosine_iters,omitempty"`
}

// cosineFactor is the half-cosine decay factor of iteration it (0-based)
// over total iterations: 1 at it = 0, falling to 0 at it = total and
// staying there. total ≤ 0 means no decay.
func cosineFactor(it, total int) float64 {
	if total <= 0 {
		return 1
	}
	if it >= total {
		return 0
	}
	return 0.5 * (1 + math.Cos(math.Pi*float64(it)/float64(total)))
}

// MetaConfig configures dd, sldd and ld.
type MetaConfig struct {
	// Steps is the number of unrolled inner SGD steps on the whole
	// synthetic set (default 10).
	Steps int `json:"steps,omitempty"`
	// LRInit is the initial inner step size η (default 0.01); it is
	// learned (as log η, eq. 11) with Adam at rate LRLR (default 0.01).
	LRInit float64 `json:"lr_init,omitempty"`
	LRLR   float64 `json:"lr_lr,omitempty"`
	// LRLabel is the Adam learning rate of the label logits (sldd, ld;
	// default 0.01).
	LRLabel float64 `json:"lr_label,omitempty"`
	// Momentum is the inner loop's heavy-ball momentum β (Deng &
	// Russakovsky, eq. 12–13; default 0: plain SGD as in DD).
	Momentum float64 `json:"momentum,omitempty"`
	// Segment, if positive, back-propagates through the unroll Segment
	// steps at a time with recomputation (MetaTask.Segment): the same
	// gradient in memory bounded by one segment, for long unrolls (Deng &
	// Russakovsky unroll up to 200 steps).
	Segment int `json:"segment,omitempty"`
	// Bases (K) and Formations (r, images per class) size linba's
	// memory and addressing (linba.go; default r = 4·IPC and the largest
	// K within the budget of IPC plain images per class).
	Bases      int `json:"bases,omitempty"`
	Formations int `json:"formations,omitempty"`
}

// part2Defaults fills the zero fields of the methods of this file. It runs
// before the generic defaults, so it can choose its own batch size and
// image learning rate.
func (cfg Config) part2Defaults() Config {
	cfg = cfg.genDefaults() // gtn, itgan (gtn.go)
	cfg = cfg.kfsDefaults()
	switch {
	case cfg.Method == MethodHaBa:
		cfg = cfg.habaDefaults()
	case IsKRRMethod(cfg.Method):
		k := &cfg.KRR
		if cfg.Method == MethodKIP && k.Kernel == "" {
			k.Kernel = KernelFC
		}
		if cfg.Method == MethodKIP {
			if k.Depth == 0 {
				k.Depth = 3
				if k.Kernel == KernelConv {
					k.Depth = 2
				}
			}
			if k.WVar == 0 {
				k.WVar = 2
			}
			if k.BVar == 0 {
				k.BVar = 0.01
			}
		}
		if k.Reg == 0 {
			k.Reg = 1e-6
			if cfg.Method == MethodRFAD {
				k.Reg = 1e-4
			}
		}
		if k.LRLabel == 0 {
			k.LRLabel = 0.01
		}
		if k.Chunk == 0 && k.Kernel == KernelConv {
			k.Chunk = 64
		}
		if k.Models == 0 && cfg.Method != MethodKIP {
			k.Models = 4
		}
		if k.Width == 0 && cfg.Method == MethodRFAD {
			k.Width = 64
		}
		if k.MaxAge == 0 && cfg.Method == MethodFRePo {
			k.MaxAge = 100
		}
		if cfg.BatchReal == 0 {
			switch {
			case cfg.Method == MethodKIP && k.Kernel == KernelFC:
				cfg.BatchReal = 100
			default:
				cfg.BatchReal = 20
			}
		}
		if cfg.LRImg == 0 {
			cfg.LRImg = 0.01
		}
	case IsMetaMethod(cfg.Method):
		m := &cfg.Meta
		if m.Steps == 0 {
			m.Steps = 10
		}
		if m.LRInit == 0 {
			m.LRInit = 0.01
		}
		if m.LRLR == 0 {
			m.LRLR = 0.01
		}
		if m.LRLabel == 0 {
			m.LRLabel = 0.01
		}
		if cfg.BatchReal == 0 {
			cfg.BatchReal = 20
		}
		if cfg.LRImg == 0 {
			cfg.LRImg = 0.01
		}
	}
	return cfg
}

// part2Validate checks the fields of this file's methods (after Defaults).
func (cfg Config) part2Validate() []error {
	errs := cfg.kfsValidate()
	finitePos := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	errs = append(errs, cfg.genValidate()...) // gtn, itgan (gtn.go)
	switch {
	case cfg.Method == MethodHaBa:
		errs = append(errs, cfg.habaValidate()...)
	case IsKRRMethod(cfg.Method):
		k := cfg.KRR
		if cfg.Method == MethodKIP && k.Kernel != KernelFC && k.Kernel != KernelConv {
			errs = append(errs, fmt.Errorf("kernel %q: want %s or %s", k.Kernel, KernelFC, KernelConv))
		}
		if cfg.Method == MethodKIP && (k.Depth < 1 || k.Depth > 64) {
			errs = append(errs, fmt.Errorf("kernel depth %d must be in [1, 64]", k.Depth))
		}
		if k.CosineIters < 0 {
			errs = append(errs, fmt.Errorf("cosine decay length %d must not be negative (0: constant rates)", k.CosineIters))
		}
		if cfg.Method == MethodKIP && (!finitePos(k.WVar) || !(k.BVar >= 0) || math.IsInf(k.BVar, 0)) {
			errs = append(errs, fmt.Errorf("kernel variances σw² %g and σb² %g: want σw² > 0 and σb² ≥ 0 (defaults 2 and 0.01)", k.WVar, k.BVar))
		}
		if !finitePos(k.Reg) {
			errs = append(errs, fmt.Errorf("KRR regularisation %g must be positive (default 1e-6)", k.Reg))
		}
		if !finitePos(cfg.LRImg) || !finitePos(k.LRLabel) {
			errs = append(errs, fmt.Errorf("image and label learning rates (%g, %g) must be positive", cfg.LRImg, k.LRLabel))
		}
		if k.Chunk < 0 {
			errs = append(errs, fmt.Errorf("target chunk %d must not be negative", k.Chunk))
		}
		if cfg.Method != MethodKIP && (k.Models < 1 || k.Models > 1024) {
			errs = append(errs, fmt.Errorf("%s needs 1 to 1024 networks, got %d", cfg.Method, k.Models))
		}
		if cfg.Method == MethodRFAD && (k.Width < 1 || k.Width > 4096) {
			errs = append(errs, fmt.Errorf("random-feature network width %d must be in [1, 4096]", k.Width))
		}
		if cfg.Method == MethodFRePo && k.MaxAge < 1 {
			errs = append(errs, fmt.Errorf("frepo network age limit %d must be positive", k.MaxAge))
		}
	case IsMetaMethod(cfg.Method):
		m := cfg.Meta
		if m.Steps < 1 || m.Steps > 1000 {
			errs = append(errs, fmt.Errorf("unrolled steps %d must be in [1, 1000]", m.Steps))
		}
		if m.Bases < 0 || m.Formations < 0 {
			errs = append(errs, fmt.Errorf("linba bases %d and formations %d must not be negative (0: by budget)", m.Bases, m.Formations))
		}
		if !(m.Momentum >= 0 && m.Momentum < 1) || m.Segment < 0 {
			errs = append(errs, fmt.Errorf("inner momentum %g must be in [0, 1) and the unroll segment %d not negative", m.Momentum, m.Segment))
		}
		if !finitePos(m.LRInit) || !finitePos(m.LRLR) || !finitePos(m.LRLabel) || !finitePos(cfg.LRImg) {
			errs = append(errs, fmt.Errorf("inner step size %g and the learning rates of step size %g, labels %g and images %g must be positive", m.LRInit, m.LRLR, m.LRLabel, cfg.LRImg))
		}
	}
	return errs
}

// newPart2 returns the distiller of a method of this file, or nil.
func newPart2(cfg Config) Distiller {
	switch {
	case cfg.Method == MethodHaBa:
		return newHaBa(cfg)
	case IsKRRMethod(cfg.Method):
		return newKRR(cfg)
	case IsMetaMethod(cfg.Method):
		return newMeta(cfg)
	case cfg.Method == MethodIDC:
		return newIDC(cfg)
	case IsGenMethod(cfg.Method):
		return newGen(cfg)
	case cfg.Method == MethodKFS:
		return newKFS(cfg)
	}
	return nil
}
