#include "fewstep/core/interrupt.h"

#include <atomic>

namespace fewstep {

namespace {
std::atomic<InterruptCheck> g_check{nullptr};
}  // namespace

InterruptCheck set_interrupt_check(InterruptCheck check) noexcept { return g_check.exchange(check); }

void check_interrupt() {
  const InterruptCheck check = g_check.load(std::memory_order_relaxed);
  if (check == nullptr) return;
  if (const int pending = check(); pending > 0) throw Interrupted(pending);
}

}  // namespace fewstep
