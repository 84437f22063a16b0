#include "engine/send_log.hh"

namespace shunt {

using tcp::SeqNum;

bool SendLog::record(SeqNum start, SeqNum end, Time now, bool retransmission, const RateSnapshot& rate) {
  if (!(start < end)) return true;
  bool kept = true;
  if (retransmission) kept = cut(start, end);
  if (n != 0) {
    Entry& last = e[n - 1];
    if (last.end == start && last.sent == now && last.retransmitted == retransmission && !last.lost) {
      last.end = end;
      return kept;
    }
  }
  if (n == kMax) kept = make_room() && kept;
  e[n++] = Entry{start, end, now, next_order++, retransmission, false, rate};
  return kept;
}

void SendLog::trim_below(SeqNum una) {
  uint8_t out = 0;
  for (uint8_t i = 0; i < n; ++i) {
    if (e[i].end <= una) continue;
    e[out] = e[i];
    if (e[out].start < una) e[out].start = una;
    ++out;
  }
  n = out;
}

bool SendLog::split(uint8_t i, SeqNum seq) {
  if (n == kMax || !(e[i].start < seq && seq < e[i].end)) return false;
  Entry right = e[i];
  right.start = seq;
  e[i].end = seq;
  insert(uint8_t(i + 1), right);
  return true;
}

bool SendLog::cut(SeqNum start, SeqNum end) {
  bool kept = true;
  for (uint8_t i = 0; i < n;) {
    Entry& x = e[i];
    if (x.end <= start || end <= x.start) {
      ++i;
    } else if (start <= x.start && x.end <= end) {
      erase(i);
    } else if (x.start < start && end < x.end) {
      // [start, end) lies strictly inside: the entry becomes two. Ranges are
      // disjoint, so no other entry overlaps; done.
      if (n == kMax) {
        kept = make_room();
        return cut(start, end) && kept;
      }
      Entry right = x;
      right.start = end;
      x.end = start;
      insert(uint8_t(i + 1), right);
      return kept;
    } else if (x.start < start) {
      x.end = start;
      ++i;
    } else {
      x.start = end;
      ++i;
    }
  }
  return kept;
}

bool SendLog::make_room() {
  // Merge the closest pair of time neighbours that join in sequence space.
  int best = -1;
  Time best_gap = ~Time{0};
  for (uint8_t i = 0; i + 1 < n; ++i) {
    const Entry& a = e[i];
    const Entry& b = e[i + 1];
    if (a.lost != b.lost || a.end != b.start) continue;
    Time gap = b.sent - a.sent;
    if (gap < best_gap) {
      best_gap = gap;
      best = i;
    }
  }
  if (best >= 0) {
    Entry& a = e[best];
    const Entry& b = e[best + 1];
    a.end = b.end;
    a.sent = b.sent;
    a.order = b.order;
    a.rate = b.rate;
    a.retransmitted = a.retransmitted || b.retransmitted;
    erase(uint8_t(best + 1));
    return true;
  }
  // Forget the oldest entry not waiting for its retransmission.
  uint8_t victim = 0;
  for (uint8_t i = 0; i < n; ++i) {
    if (!e[i].lost) {
      victim = i;
      break;
    }
  }
  erase(victim);
  return false;
}

void SendLog::erase(uint8_t i) {
  for (uint8_t k = i; k + 1 < n; ++k) e[k] = e[k + 1];
  --n;
}

void SendLog::insert(uint8_t i, const Entry& x) {
  for (uint8_t k = n; k > i; --k) e[k] = e[k - 1];
  e[i] = x;
  ++n;
}

}  // namespace shunt
