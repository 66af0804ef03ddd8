# Sourced by the benchmark scripts. `settle` waits until files written now
# lie outside cairn's racy window (two seconds plus the kernel's writeback
# delay, from /proc/sys/vm): a backup reads again a file changed within it
# before its parent began (README, "Snapshot kinds"), and a no-change
# backup is meant to find files written long before, as a nightly job's
# are. Every tool waits alike.
settle() {
  local expire period
  expire=$(cat /proc/sys/vm/dirty_expire_centisecs 2>/dev/null || echo 3000)
  period=$(cat /proc/sys/vm/dirty_writeback_centisecs 2>/dev/null || echo 500)
  ((period > 0)) || period=90000
  echo "waiting $(((expire + period) / 100 + 3)) s for cairn's racy window" >&2
  sleep $(((expire + period) / 100 + 3))
}
