# Sourced by the MNIST student benchmarks (bench-online, bench-transfer, bench-features): what
# they share. Needs `bin` (the distill binary) and `student` (an array of `distill train` flags
# every student of the script takes) set by the caller.

# train RUN [FLAGS...]: trains one student into RUN (its summary in RUN.json) unless RUN holds a
# finished one; an unfinished RUN is started over.
train() {
    local run=$1
    shift
    [ -f "$run/student.ckpt" ] && return 0
    rm -rf "$run"
    "$bin" train "${student[@]}" --out "$run" "$@" >"$run.json"
}
