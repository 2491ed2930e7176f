#!/bin/sh
# The CPUs this shell may use: nproc (its affinity), capped by a cgroup v2
# (cpu.max) or v1 (cfs_quota_us) CPU quota, as a container's --cpus sets.
n=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc honours OMP_*
if [ -r /sys/fs/cgroup/cpu.max ]; then
  read -r quota period < /sys/fs/cgroup/cpu.max
  [ "$quota" != max ] && q=$(( (quota + period - 1) / period )) && [ "$q" -lt "$n" ] && n=$q
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
  period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
  [ "$quota" -gt 0 ] && q=$(( (quota + period - 1) / period )) && [ "$q" -lt "$n" ] && n=$q
fi
[ "$n" -ge 1 ] || n=1
echo "$n"
