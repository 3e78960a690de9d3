#!/bin/bash
# A/B of mtt IPC 10 at one thread: A = a3c5eae's pool (64 buffers per size), B = this change.
cd /work/main
for round in 1 2; do
for v in A B; do
  bin=/tmp/fedsim; [ $v = B ] && bin=/tmp/fedsim-new
  d=/tmp/ab-$v-$round; rm -rf $d
  GOMAXPROCS=1 /usr/bin/time -v $bin distill --dataset mnist --method mtt --ipc 10 --iters 3 --eval-runs 0 --checkpoint-every 0 --seed 1 --quiet --out $d --buffer bench/distill/buffer-mnist-e21-n2560 --syn-steps 30 --expert-epochs 2 --max-start-epoch 20 --lr-img 100 --lr-lr 1e-5 --lr-teacher 0.001 --batch-syn 0 --labels hard --init real --dsa-strategy color_crop_cutout_scale_rotate > $d.log 2>&1
  echo "$v $round $(grep -o '"seconds_per_iteration_median": [0-9.]*' $d/report.json) $(grep -o '"seconds_per_iteration": [0-9.]*' $d/report.json) sys=$(grep 'System time' $d.log | awk '{print $NF}') user=$(grep 'User time' $d.log | awk '{print $NF}') faults=$(grep 'Minor' $d.log | awk '{print $NF}') rss_kb=$(grep 'Maximum resident' $d.log | awk '{print $NF}')"
done; done
