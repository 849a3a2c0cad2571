"""Benchmarks, each the logic of one job (jobs/bench_*.py are their command lines).

  regroup       the regroup's clustering core against a per-product scikit-learn loop and Spark MLlib
  simulate      the simulator's rows per second at two world sizes, 10x apart
  gmllm         G-MLLM pre-training and GRM training steps under DeepSpeed: tokens/s, memory, MFU (torch,
                DeepSpeed and transformers only: a GPU node runs it without Spark, Delta or petastorm)
  gmllm_export  the rows that gmllm times, sampled from the warehouse (needs the data stack)
"""
