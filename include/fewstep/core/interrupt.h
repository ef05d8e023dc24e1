/// @file core/interrupt.h
/// @brief Prompt interruption of long C++ loops (Ctrl-C, SIGTERM) without a dependency on any front end.
///
/// The long loops of the library (the sampling loop of sample/request.h, reference solves, the
/// training loop of train/trainer.h) call check_interrupt() between steps. It asks the installed
/// interrupt check — a plain function the front end sets: the Python bindings run Python's
/// pending signal handlers under the GIL (so Ctrl-C raises KeyboardInterrupt), the `fewstep`
/// command reads the flag its SIGINT/SIGTERM handler set — and throws Interrupted when it
/// reports a pending interrupt. With no check installed (the default) check_interrupt() costs
/// one atomic load. Interrupted does not derive from c10::Error, so code that rewraps the
/// library's argument errors lets it through unchanged.
#pragma once

#include <exception>

namespace fewstep {

/// Thrown by check_interrupt() when the installed check reports an interrupt.
class Interrupted : public std::exception {
 public:
  /// `signal`: the signal number that caused it when the front end knows it (else 0).
  explicit Interrupted(int signal = 0) : signal_(signal) {}
  const char* what() const noexcept override { return "interrupted"; }
  int signal() const noexcept { return signal_; }

 private:
  int signal_;
};

/// Returns the number of a pending interrupt (a signal number, or any positive value), 0 if none.
/// It is called from whichever thread runs a loop, often; it should be cheap and thread-safe.
using InterruptCheck = int (*)();

/// Installs `check` (nullptr removes it); returns the previous one.
InterruptCheck set_interrupt_check(InterruptCheck check) noexcept;

/// Throws Interrupted(n) when the installed check returns n > 0.
void check_interrupt();

}  // namespace fewstep
