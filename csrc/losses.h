// Losses of the training loop that are worth a fused kernel. No Python headers here.
//
// Softmax cross-entropy over rows (the classifier head of a sequence model: rows are the
// (time, batch) positions, columns the classes):
//
//   logits   (N, C)  row-major, float or double
//   targets  (N,)    int64; a row whose target == ignore_index is skipped, every other target lies
//                    in 0..C-1 (checked by the caller, trusted here)
//   row_loss (N,)    OUT or null: -sum_c q_c log softmax(x)_c with q = (1-eps) onehot(t) + eps/C;
//                    0 for a skipped row
//   dlogits  (N, C)  OUT or null: grad_scale * d row_loss / d logits
//                    = grad_scale * (softmax(x) - q); zeros for a skipped row
//
// One pass per row: max, exp and sum, log-sum-exp, loss, gradient; the exponentials are kept in
// dlogits between the sum and the scaling, so the row is read from memory once and written once.
//
// Returns the sum of the row losses. Rows are summed in double in blocks of kLossBlockRows, each
// block in row order, then the block sums in block order: a fixed order, so the value does not
// depend on the thread count (and each row is computed by one thread with the same code).
#pragma once
#include <cstdint>

namespace rnnfast {

constexpr int64_t kLossBlockRows = 64;

template <class T>
double softmax_cross_entropy(const T* logits, const int64_t* targets, int64_t n, int64_t c,
                             int64_t ignore_index, double label_smoothing, double grad_scale,
                             T* row_loss, T* dlogits);

}  // namespace rnnfast
