// The authors' PairwiseLoss layer (zhuhan1236/dhn-caffe, src/caffe/layers/pairwise_loss_layer.cu),
// ported to the CPU for the test oracle. In dhn-caffe, Forward_cpu and Backward_cpu are empty: the
// layer only ever ran on the GPU. Here every CUDA kernel becomes a loop over the same `index` with
// the same expression, and caffe_gpu_{gemm,exp,asum} become caffe_cpu_gemm / caffe_exp /
// caffe_cpu_asum. Nothing else changes: the semantics (diagonal pairs, unscaled inner product,
// threshold, the gradient that ignores the top diff / loss_weight) are the authors', on purpose.
//
// Line-by-line correspondence with pairwise_loss_layer.cu (names of the .cu on the left):
//
//   .cu                                              this file
//   ---------------------------------------------    -------------------------------------------
//   SimilarityProcess kernel (-1 if s<0 or s>=C,      SimilarityProcess(): same branches, same
//     1 if s>0, else unchanged)                         order, loop over index < N*N
//   PairwiseLossForwardGPU kernel                     PairwiseLossForward(): same branches:
//     count = 1; product >= thr (thr >= 0):             count = 1; product*(1-(s>0)) above the
//     product*(1-(s>0)); else log(1+exp)-(s>0)*p        threshold, else log(1+exp)-(s>0)*p
//   ForwardGPU kernel (quantization value)            QuantizationForward(): same; CUDA's
//     log(cosh(abs(x)-1)), or abs(x)-1-log(2)           device abs(float) is fabsf: std::abs
//   caffe_gpu_gemm(NoTrans, Trans, N, N, C, label)    caffe_cpu_gemm(NoTrans, Trans, N, N, C, ...)
//   caffe_gpu_gemm(NoTrans, Trans, N, N, K, z)        caffe_cpu_gemm(NoTrans, Trans, N, N, K, ...)
//   caffe_gpu_exp(N*N, dot, exp)                      caffe_exp(N*N, dot, exp)
//   caffe_gpu_asum(N*N, loss) / asum(count)           caffe_cpu_asum(N*N, loss) / asum(count)
//   loss *= (l_lambda > 0); q_loss /= N*K;            identical statements
//     q_loss *= (q_gamma > 0); top = loss + q_loss
//   PairwiseLossBackwardGPU kernel                    PairwiseLossBackward(): diff =
//     diff = 2*(1/(1+1/exp) - (s>0)), count = 1         2*(1/(1+1/exp) - (s>0)), count = 1
//   caffe_gpu_gemm(NoTrans, NoTrans, N, K, N,         caffe_cpu_gemm(NoTrans, NoTrans, N, K, N,
//     l_lambda/count, diff, z, 0, bottom_diff)          l_lambda/count, diff, z, 0, bottom_diff)
//   BackwardGPU kernel: += +-(q_gamma/N) *            QuantizationBackward(): same, + for x >= 0,
//     tanh(abs(x)-1)                                    - otherwise
//
// Its correctness is checked by tests/caffe/oracle.py (`gradient_check`): central finite
// differences of the layer's top value against its backward, in a configuration where the applied
// gradient is the derivative of the printed value (q_gamma = 1/K, theta below the threshold).
// Built into Caffe by tests/caffe/build_caffe.sh (with PairwiseParameter added to caffe.proto).
#include <cmath>
#include <vector>

#include "caffe/layer.hpp"
#include "caffe/layer_factory.hpp"
#include "caffe/layers/loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
class PairwiseLossLayer : public LossLayer<Dtype> {
 public:
  explicit PairwiseLossLayer(const LayerParameter& param) : LossLayer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  virtual inline const char* type() const { return "PairwiseLoss"; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  Blob<Dtype> pairwise_s_;   // data: similarity, diff: dot product (as in the .cu)
  Blob<Dtype> loss_;         // data: per-pair loss, diff: exp(dot product)
  Blob<Dtype> q_loss_;
  Blob<Dtype> temp_;         // forward: count; backward: data = diff, diff = count
  int pairwise_axis_, outer_num_, inner_num_, label_dim_;
  Dtype l_threshold_, q_threshold_, l_lambda_, q_gamma_;
};

// ---- the .cu kernels, one loop each -------------------------------------------------------------
template <typename Dtype>
static void SimilarityProcess(const int nthreads, Dtype* similarity, Dtype label_dim) {
  for (int index = 0; index < nthreads; ++index) {
    if ((similarity[index] < 0) || (similarity[index] >= label_dim)) {
      similarity[index] = Dtype(-1.0);   // unknown label
    } else if (similarity[index] > 0) {
      similarity[index] = Dtype(1.0);    // similar label
    }
  }
}

template <typename Dtype>
static void PairwiseLossForward(const int nthreads, const Dtype* similarity,
    const Dtype* exp_product, const Dtype* product, const Dtype threshold, Dtype* count,
    Dtype* loss_data) {
  for (int index = 0; index < nthreads; ++index) {
    if (similarity[index] >= 0) {
      count[index] = Dtype(1.0);
      if ((threshold >= 0) && (product[index] >= threshold)) {
        loss_data[index] = product[index] * (1 - (similarity[index] > 0));
      } else {
        loss_data[index] = log(1 + exp_product[index]) - (similarity[index] > 0) * product[index];
      }
    } else {
      count[index] = Dtype(0.0);
      loss_data[index] = Dtype(0.0);
    }
  }
}

template <typename Dtype>
static void QuantizationForward(const int nthreads, const Dtype* bottom_data, Dtype threshold,
    Dtype* loss_data) {
  for (int index = 0; index < nthreads; ++index) {
    if ((threshold > 0) && ((std::abs(bottom_data[index]) - 1) > threshold)) {
      loss_data[index] = (std::abs(bottom_data[index]) - 1) - log(Dtype(2));
    } else {
      loss_data[index] = log(cosh(std::abs(bottom_data[index]) - 1));
    }
  }
}

template <typename Dtype>
static void PairwiseLossBackward(const int nthreads, const Dtype* similarity,
    const Dtype* exp_product, Dtype* count, Dtype* diff) {
  for (int index = 0; index < nthreads; ++index) {
    if (similarity[index] >= 0) {
      diff[index] = 2 * (1 / (1 + 1 / exp_product[index]) - (similarity[index] > 0));
      count[index] = Dtype(1.0);
    } else {
      diff[index] = Dtype(0.0);
      count[index] = Dtype(0.0);
    }
  }
}

template <typename Dtype>
static void QuantizationBackward(const int nthreads, const Dtype* bottom_data, const Dtype scale,
    Dtype* bottom_diff) {
  for (int index = 0; index < nthreads; ++index) {
    if (bottom_data[index] >= 0) {
      bottom_diff[index] += scale * tanh(std::abs(bottom_data[index]) - 1);
    } else {
      bottom_diff[index] += -scale * tanh(std::abs(bottom_data[index]) - 1);
    }
  }
}

// ---- the layer: pairwise_loss_layer.cpp (set-up) and .cu (Forward_gpu / Backward_gpu) ----------
template <typename Dtype>
void PairwiseLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  LossLayer<Dtype>::LayerSetUp(bottom, top);
  l_threshold_ = this->layer_param_.pairwise_param().l_threshold();
  q_threshold_ = this->layer_param_.pairwise_param().q_threshold();
  l_lambda_ = this->layer_param_.pairwise_param().l_lambda();
  q_gamma_ = this->layer_param_.pairwise_param().q_gamma();
}

template <typename Dtype>
void PairwiseLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  LossLayer<Dtype>::Reshape(bottom, top);
  pairwise_axis_ = bottom[0]->CanonicalAxisIndex(this->layer_param_.pairwise_param().axis());
  outer_num_ = bottom[0]->count(0, pairwise_axis_);
  inner_num_ = bottom[0]->count(1);
  label_dim_ = bottom[1]->count(1);
  if (top.size() >= 2) {
    top[1]->ReshapeLike(*bottom[0]);
  }
  pairwise_s_.Reshape(1, 1, bottom[0]->count(0, 1), bottom[0]->count(0, 1));
  loss_.Reshape(1, 1, bottom[0]->count(0, 1), bottom[0]->count(0, 1));
  q_loss_.Reshape(1, 1, bottom[0]->count(0, 1), bottom[0]->count(1));
  temp_.Reshape(1, 1, outer_num_, outer_num_);
}

template <typename Dtype>
void PairwiseLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  Dtype* similarity = pairwise_s_.mutable_cpu_data();
  Dtype* dot_product = pairwise_s_.mutable_cpu_diff();
  Dtype* exp_product = loss_.mutable_cpu_diff();
  Dtype* loss_data = loss_.mutable_cpu_data();
  Dtype* count = temp_.mutable_cpu_data();
  const Dtype* label = bottom[1]->cpu_data();
  const Dtype* bottom_data = bottom[0]->cpu_data();
  int nthreads = outer_num_ * outer_num_;
  // similarity matrix from the labels
  caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, outer_num_, outer_num_, label_dim_,
      Dtype(1.0), label, label, Dtype(0.0), similarity);
  SimilarityProcess<Dtype>(nthreads, similarity, label_dim_);
  // dot_product and exp_product
  caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, outer_num_, outer_num_, inner_num_,
      Dtype(1.0), bottom_data, bottom_data, Dtype(0.0), dot_product);
  caffe_exp<Dtype>(outer_num_ * outer_num_, dot_product, exp_product);
  // pairwise loss
  PairwiseLossForward<Dtype>(nthreads, similarity, exp_product, dot_product, l_threshold_,
      count, loss_data);
  Dtype loss = caffe_cpu_asum<Dtype>(nthreads, loss_data);
  Dtype count_num = caffe_cpu_asum<Dtype>(nthreads, count);
  loss /= (count_num > 0 ? count_num : Dtype(1));
  LOG(INFO) << "L loss:" << loss;
  loss = loss * (l_lambda_ > 0);
  // quantization loss
  nthreads = outer_num_ * inner_num_;
  QuantizationForward<Dtype>(nthreads, bottom_data, q_threshold_, q_loss_.mutable_cpu_data());
  Dtype q_loss = caffe_cpu_asum<Dtype>(nthreads, q_loss_.cpu_data());
  q_loss /= nthreads;
  LOG(INFO) << "Q loss:" << q_loss;
  q_loss = q_loss * (q_gamma_ > 0);
  top[0]->mutable_cpu_data()[0] = loss + q_loss;
}

template <typename Dtype>
void PairwiseLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type() << " Layer cannot backpropagate to label inputs.";
  }
  if (propagate_down[0]) {
    Dtype* bottom_diff = bottom[0]->mutable_cpu_diff();
    Dtype* diff = temp_.mutable_cpu_data();
    Dtype* count = temp_.mutable_cpu_diff();
    const Dtype* similarity = pairwise_s_.cpu_data();
    const Dtype* exp_product = loss_.cpu_diff();
    const Dtype* bottom_data = bottom[0]->cpu_data();
    int nthreads = outer_num_ * outer_num_;
    PairwiseLossBackward<Dtype>(nthreads, similarity, exp_product, count, diff);
    Dtype count_num = caffe_cpu_asum<Dtype>(nthreads, count);
    caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, outer_num_, inner_num_, outer_num_,
        l_lambda_ / (count_num > 0 ? count_num : Dtype(1)), diff, bottom_data,
        Dtype(0.0), bottom_diff);
    // quantization term
    nthreads = inner_num_ * outer_num_;
    QuantizationBackward<Dtype>(nthreads, bottom_data, q_gamma_ / outer_num_, bottom_diff);
  }
}

INSTANTIATE_CLASS(PairwiseLossLayer);
REGISTER_LAYER_CLASS(PairwiseLoss);

}  // namespace caffe
