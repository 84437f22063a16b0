// How long an idle daemon polls before it sleeps, learned from when frames arrive
// (docs/architecture.md, "Sleeping"). A sleeping daemon costs the next frame a
// wake-up; a spinning one costs CPU. Spinning pays when the next frame is near
// and predictable, as in request/response traffic, where it comes one client
// turnaround after the answer: then the daemon polls a little past that. When
// arrivals scatter (many clients, a fixed offered load) a longer spin would mostly
// burn CPU, so it keeps to the configured base.
#pragma once

#include <algorithm>

#include "engine/engine.hh"

namespace shunt {

class ArrivalGaps {
 public:
  // The longest spin the estimate may ask for: past it a wake-up costs little
  // next to the wait itself.
  static constexpr Time kMostSpin = 200;

  // Frames arrived `gap` after the daemon's last work, after at least one turn
  // without any. The mean and mean deviation as TCP's RTT estimator keeps them
  // (gains 1/8 and 1/4, RFC 6298; scaled by 8 and 4, so that integer steps do not
  // stall short of the true mean); a gap past kMostSpin counts as kMostSpin, so
  // that one long silence delays the return to a steady spin by a few exchanges.
  void sample(Time gap) {
    gap = std::min(gap, kMostSpin);
    if (!primed_) {
      mean8_ = gap * 8;
      dev4_ = gap * 2;
      primed_ = true;
      return;
    }
    Time mean = mean8_ / 8;
    Time diff = gap > mean ? gap - mean : mean - gap;
    mean8_ = mean8_ - mean + gap;
    dev4_ = dev4_ - dev4_ / 4 + diff;
  }

  // How long to poll without work: `base`, or while arrivals are steady enough
  // that the mean plus four deviations is at most kMostSpin, that if longer.
  // A base of 0 (SHUNT_SPIN_US=0) never spins.
  Time budget(Time base) const {
    if (base == 0 || !primed_) return base;
    Time reach = mean8_ / 8 + dev4_;  // mean + 4 x (dev4_ / 4)
    return reach <= kMostSpin ? std::max(base, reach) : base;
  }

 private:
  Time mean8_ = 0;  // 8 x the mean gap
  Time dev4_ = 0;   // 4 x the mean deviation
  bool primed_ = false;
};

}  // namespace shunt
