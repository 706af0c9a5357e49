package core

import "runtime"

// runtimeLocked runs fn on a locked OS thread, as a write transaction needs.
func runtimeLocked(fn func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(done)
		fn()
	}()
	<-done
}
