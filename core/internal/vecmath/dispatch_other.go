//go:build !amd64 || purego

package vecmath

// selectKernels returns the portable kernels: this build has no assembly.
func selectKernels() kernelSet { return genericKernels }

// simdKernels lists the accelerated kernel sets this CPU can run: none in this build.
func simdKernels() []kernelSet { return nil }
