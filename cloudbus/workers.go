package cloudbus

import "sync"

// workerPool runs handlers on goroutines that are kept after use, up to
// maxIdle of them. A handler decoding JSON grows a new goroutine's stack
// several times; a reused goroutine has grown it already. There is no limit
// on running workers: a handler may block for as long as its deadline.
type workerPool struct {
	maxIdle int
	mu      sync.Mutex
	idle    []chan func()
	stopped bool
	wg      sync.WaitGroup
}

func (p *workerPool) run(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ch := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		ch <- f
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go p.work(f)
}

func (p *workerPool) work(f func()) {
	defer p.wg.Done()
	ch := make(chan func(), 1)
	for {
		f()
		p.mu.Lock()
		if p.stopped || len(p.idle) >= p.maxIdle {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		var ok bool
		if f, ok = <-ch; !ok {
			return
		}
	}
}

// stop ends idle workers and waits for busy ones to finish their function.
func (p *workerPool) stop() {
	p.mu.Lock()
	p.stopped = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ch := range idle {
		close(ch)
	}
	p.wg.Wait()
}
