//go:build windows

package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// unixModes says that files have Unix modes and owners to check; Windows has ACLs instead.
const unixModes = false

// processGroup is the job object a command runs in: killing the job kills the shell and every
// process it started, and so does the agent's end while the command runs (kill-on-close, lifted
// once the command returned).
type processGroup struct {
	mu  sync.Mutex // started and close run in RunCommand, kill also from ctx's cancel
	job windows.Handle
}

// passEnv are the variables of the agent's environment that commands get, besides PATH: those
// that Windows' own programs and PowerShell need to find the system, its programs and a
// temporary directory (without SystemRoot or PSModulePath, some fail in ways hard to read).
var passEnv = []string{"SystemRoot", "SystemDrive", "windir", "ComSpec", "PATHEXT", "TEMP", "TMP",
	"ProgramData", "ProgramFiles", "ProgramFiles(x86)", "ProgramW6432", "CommonProgramFiles",
	"ALLUSERSPROFILE", "USERPROFILE", "APPDATA", "LOCALAPPDATA", "PSModulePath", "COMPUTERNAME",
	"NUMBER_OF_PROCESSORS", "PROCESSOR_ARCHITECTURE", "OS", "TZ"}

// maxEnvVar bounds a variable the agent sets for a check, command or health check, "NAME=value":
// Windows starts no program whose environment block is over 32,767 characters, and the other
// variables (passEnv, command_env) take their share of it.
const maxEnvVar = 16 << 10

// Shells a template may name (shell:); the first is the default.
var shells = []string{"cmd", "powershell"}

// shellCommand runs command through cmd /S /C (or PowerShell), from the system drive's root, in
// a job object that ctx's end kills whole.
func shellCommand(ctx context.Context, shell, command string) (*exec.Cmd, *processGroup) {
	var cmd *exec.Cmd
	// Suspended until it is in its job object (started): a process it started before would be
	// outside the job, and outlive a timeout.
	attr := &syscall.SysProcAttr{CreationFlags: windows.CREATE_SUSPENDED}
	if shell == "powershell" {
		cmd = exec.CommandContext(ctx, "powershell.exe", "-NoProfile", "-NonInteractive", "-Command", command)
	} else {
		cmd = exec.CommandContext(ctx, "cmd.exe")
		// cmd.exe parses its own command line: pass the command as written, not quoted by Go.
		attr.CmdLine = `cmd.exe /S /C "` + command + `"`
	}
	cmd.SysProcAttr = attr
	cmd.Dir = os.Getenv("SystemDrive") + `\`
	g := &processGroup{}
	cmd.Cancel = func() error {
		g.kill()
		return cmd.Process.Kill()
	}
	return cmd, g
}

// started puts the started command, suspended, into a new job object that kills its processes
// when closed, then lets it run.
func (g *processGroup) started(cmd *exec.Cmd) error {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return fmt.Errorf("create job object: %w", err)
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("set job object limits: %w", err)
	}
	p, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
	if err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("open the command's process: %w", err)
	}
	defer windows.CloseHandle(p)
	if err := windows.AssignProcessToJobObject(job, p); err != nil {
		windows.CloseHandle(job)
		return fmt.Errorf("assign the command to a job object: %w", err)
	}
	g.mu.Lock()
	g.job = job
	g.mu.Unlock()
	return resume(uint32(cmd.Process.Pid))
}

// resume resumes the threads of process pid, started suspended (os/exec keeps no handle of its
// first thread).
func resume(pid uint32) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("resume the command: %w", err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != pid {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			return fmt.Errorf("resume the command: %w", err)
		}
		_, err = windows.ResumeThread(th)
		windows.CloseHandle(th)
		if err != nil {
			return fmt.Errorf("resume the command: %w", err)
		}
		resumed++
	}
	if resumed == 0 {
		return fmt.Errorf("resume the command: no thread of process %d found", pid)
	}
	return nil
}

// kill ends every process of the job.
func (g *processGroup) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		_ = windows.TerminateJobObject(g.job, 1)
	}
}

func (g *processGroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		// What the command started and left running (a program it launched with start) outlives
		// it, as a background process does on Unix: the kill-on-close limit is lifted before the
		// handle is closed. A timeout (kill) ended the job already.
		info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
		_, _ = windows.SetInformationJobObject(g.job, windows.JobObjectExtendedLimitInformation,
			uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
		windows.CloseHandle(g.job)
		g.job = 0
	}
}

// Default locations of the agent's config and cache: under %ProgramData%\shoelace.
var (
	DefaultConfigPath = filepath.Join(programData(), "shoelace", "agent.yaml")
	DefaultCacheDir   = filepath.Join(programData(), "shoelace", "cache")
)

func programData() string {
	if d := os.Getenv("ProgramData"); d != "" {
		return d
	}
	return `C:\ProgramData`
}
