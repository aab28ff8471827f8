//go:build windows

package main

import (
	"context"
	"sync"

	"github.com/kardianos/service"
)

// runService runs run, under the Windows service manager when it started the agent (which
// then stops it through Stop, not a signal), else as a plain process.
func runService(ctx context.Context, run func(context.Context) error) error {
	if service.Interactive() {
		return run(ctx)
	}
	p := &program{run: run, parent: ctx}
	s, err := service.New(p, &service.Config{Name: "shoelace-agent"})
	if err != nil {
		return err
	}
	if err := s.Run(); err != nil {
		return err
	}
	return p.err
}

// program is the agent as the service manager sees it: Start runs it, Stop ends it.
type program struct {
	run    func(context.Context) error
	parent context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error
}

func (p *program) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.err = p.run(ctx)
	}()
	return nil
}

func (p *program) Stop(service.Service) error {
	p.cancel()
	p.wg.Wait()
	return nil
}
