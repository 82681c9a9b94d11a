#!/usr/bin/env bash
# The README's GPU figures, measured on one GPU (the "On a GPU" section of the README):
#
#   bash benchmarks/gpu_figures.sh [train|monitor|large|all]   # logs under $OUT (default: gpu-figures/)
#
#   train:   the environment; BERT-6 (bert6.yaml) training throughput and MFU in bf16 through a Lightning
#            Trainer (batch 32 as configured, and 128); one FewRel-scale site's analysis on the GPU
#            (bench_analysis.py --device cuda); the MLM quick start launched by torchrun as DDP on one GPU
#            (NCCL, bf16) with the monitor, through to its report.
#   monitor: bench_monitor.py on bert6.yaml for one epoch of WIKI_ARTICLES articles (the end-to-end ratio
#            with and without the monitor, and where the monitor's time goes), then the MLM probe sites of
#            50 and 1,000 tokens on the GPU (bench_analysis.py --device cuda --mlm-k 50 1000).
#   large:   an MLM probe site of the whole vocabulary, K = 30,522, at BERT-6's width (12 x 64 nodes, 60,000 /
#            40,000 examples), first with the crossover at its ends (1 and 768 nodes), then whole. Not part
#            of `all`: each step may outlast its limit, and then prints the stages it finished.
#
# Every step runs under its own time limit and writes one log; a failing step does not stop the next.
# Environment: PYTHON (python3), WIKI (a local WikiExtractor file of articles; default the shared data's
# AA file), WIKI_ARTICLES (4000), OUT. Nothing here downloads anything.
set -u
OUT=${OUT:-gpu-figures}
PY=${PYTHON:-python3}
WIKI=$(realpath "${WIKI:-../shared/data/enwiki_2015_wikiextractor_AA.txt.gz}")
ARTICLES=${WIKI_ARTICLES:-4000}
PART=${1:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
CSV='{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}'

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit into $OUT/NAME.log, print its end
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (at most ${limit} s): $*"
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s$([ $rc = 124 ] && echo ' (time limit)')"
    # progress bars and tracebacks' middles are noise here: the log holds everything
    grep -v -E 'it/s\]|articles/s\]|batches/s\]|figures/s\]|sections/s\]|^ +(File|\^|[a-z_]+ = )' "$OUT/$name.log" | tail -n 25
}

if [ "$PART" = train ] || [ "$PART" = all ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, \
'transformers', transformers.__version__, 'bf16', torch.cuda.is_bf16_supported(), 'cpus', len(__import__('os').sched_getaffinity(0)))"
    step throughput 120 "$PY" benchmarks/bert6_epoch_time.py --measure 150 --warmup 20 --source "$WIKI" --articles 6000
    step throughput_b128 60 "$PY" benchmarks/bert6_epoch_time.py --measure 30 --warmup 10 --batch-size 128 \
        --source "$WIKI" --articles 6000
    step site_cuda 120 "$PY" benchmarks/bench_analysis.py --device cuda --skip-envelope
    step ddp_one_gpu 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m lightning_ssb fit --config quickstart_mlm.yaml \
        --trainer.accelerator gpu --trainer.devices 1 --trainer.strategy ddp --trainer.precision bf16-mixed \
        --trainer.max_epochs 1 --trainer.logger "$CSV" --trainer.default_root_dir runs/gpu-ddp \
        --ssb.init_args.dirpath runs/gpu-ddp/ssb
    ls runs/gpu-ddp/ssb 2>/dev/null | head -20
fi

if [ "$PART" = monitor ] || [ "$PART" = all ]; then
    step monitor_bert6 330 "$PY" benchmarks/bench_monitor.py --config bert6.yaml --epochs 1 --extra \
        --trainer.logger "$CSV" --data.init_args.source "[$WIKI]" --data.init_args.num_articles "$ARTICLES"
    step mlm_cuda 240 "$PY" benchmarks/bench_analysis.py --device cuda --skip-site --skip-envelope --mlm-k 50 1000
fi

if [ "$PART" = large ]; then
    step k30522_ends 280 "$PY" benchmarks/bench_analysis.py --device cuda --skip-site --skip-envelope --mlm-k 30522 \
        --mlm-nodes 12x64 --mlm-train 60000 --mlm-test 40000 --mlm-sizes 1 768
    step k30522 280 "$PY" benchmarks/bench_analysis.py --device cuda --skip-site --skip-envelope --mlm-k 30522 \
        --mlm-nodes 12x64 --mlm-train 60000 --mlm-test 40000
fi
