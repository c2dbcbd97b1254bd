/* exec_cuda_tests.h — test_exec_cuda's cases that live in files of their own. */
#ifndef LOUPE_EXEC_CUDA_TESTS_H
#define LOUPE_EXEC_CUDA_TESTS_H

/* exec_lean_exact.c: lean bf16 packing on integer-valued models, bit for bit */
void test_lean_exact(void **state);
void test_lean_exact_stop(void **state);
void test_lean_exact_rule_twice(void **state);

#endif
