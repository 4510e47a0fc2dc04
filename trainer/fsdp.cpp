#include "trainer/fsdp.h"

#include <algorithm>
#include <chrono>
#include <map>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace grpo {

struct ShardedDecoder::Unit {
  std::vector<at::Tensor> params;  // the decoder's registered parameters (placeholders between gathers)
  std::vector<size_t> named_index; // each one's index in the decoder's named_parameters()
  std::vector<int64_t> offsets;    // each one's start in the flattened unit
  std::vector<std::vector<int64_t>> shapes;
  int64_t numel = 0;               // elements of the unit
  int64_t shard = 0;               // elements per rank: ceil(numel / ranks)
  at::Tensor master;               // this rank's [shard] slice in fp32 (sharded only)
  int gathers = 0;                 // scopes holding the whole unit now
  double gather_seconds = 0;       // spent in this unit's collectives so far (host time: on CUDA,
  double reduce_scatter_seconds = 0;  // NCCL's launch, not its completion)
};

namespace {

using Unit = ShardedDecoder::Unit;

at::Tensor placeholder(const at::Tensor& like, at::ScalarType dtype) {
  return at::empty({0}, like.options().dtype(dtype).requires_grad(false));
}

// Points the unit's parameters into its gathered [ranks, shard] buffer.
void install(Unit& unit, const at::Tensor& full) {
  const at::Tensor flat = full.view({-1});
  for (size_t i = 0; i < unit.params.size(); ++i)
    unit.params[i].set_data(flat.narrow(0, unit.offsets[i], c10::multiply_integers(unit.shapes[i])).view(unit.shapes[i]));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void release_unit(Unit& unit, at::ScalarType dtype) {
  if (--unit.gathers > 0) return;
  for (at::Tensor& p : unit.params) p.set_data(placeholder(p, dtype));
}

// What a unit's backward needs: its body (capturing its other inputs by value), and where its
// parameters come from.
struct UnitCallState : torch::CustomClassHolder {
  UnitBody body;
  ShardedDecoder* owner = nullptr;
  Unit* unit = nullptr;
  Communicator* comm = nullptr;
  ShardOptions options;
  size_t next_in_forward = 0;   // the units to prefetch in each pass (past the last: none)
  size_t next_in_backward = 0;
};

// Forward without a graph; backward gathers again (when sharded), recomputes with one, and, when
// sharded, returns this rank's reduce-scattered slice of the unit's gradient as the master's
// gradient (autograd accumulates it over micro-batches and the root's three calls).
class UnitFunction : public torch::autograd::Function<UnitFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& master,
                            c10::intrusive_ptr<UnitCallState> state) {
    (void)master;
    ctx->save_for_backward({input});
    const bool sharded = state->options.shard_parameters;
    if (sharded) state->owner->gather(*state->unit, state->next_in_forward);
    at::Tensor out = state->body(input);
    if (sharded) release_unit(*state->unit, state->options.param_dtype);
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto state = c10::static_intrusive_pointer_cast<UnitCallState>(ctx->saved_data["state"].toCapsule());
    const at::Tensor input = ctx->get_saved_variables()[0];
    const bool sharded = state->options.shard_parameters;
    const bool input_grad = input.is_floating_point();
    const at::Tensor x = input_grad ? input.detach().requires_grad_(true) : input;
    torch::autograd::variable_list result(3);
    if (!sharded) {
      at::AutoGradMode enable(true);
      const at::Tensor out = state->body(x);
      torch::autograd::backward({out}, {grad_outputs[0]});  // into the parameters' .grad (and x's)
      if (input_grad) result[0] = x.grad();
      return result;
    }
    Unit& unit = *state->unit;
    state->owner->gather(unit, state->next_in_backward);
    torch::autograd::variable_list grads;
    {
      at::AutoGradMode enable(true);
      const at::Tensor out = state->body(x);
      std::vector<at::Tensor> wrt = unit.params;
      if (input_grad) wrt.push_back(x);
      grads = torch::autograd::grad({out}, wrt, {grad_outputs[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                    /*allow_unused=*/true);
    }
    at::NoGradGuard no_grad;
    at::Tensor flat = at::zeros({unit.shard * state->comm->size()}, unit.master.options().dtype(state->options.reduce_dtype));
    for (size_t i = 0; i < unit.params.size(); ++i)
      if (grads[i].defined()) flat.narrow(0, unit.offsets[i], grads[i].numel()).copy_(grads[i].reshape({-1}));
    if (input_grad) result[0] = grads.back();
    grads.clear();  // the whole unit's gradients and parameters go before the collective
    release_unit(unit, state->options.param_dtype);
    const auto start = std::chrono::steady_clock::now();
    result[1] = state->comm->reduce_scatter_sum(flat).to(at::kFloat);
    unit.reduce_scatter_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }
};

}  // namespace

ShardSource slices_of(const TensorMap& whole, at::ScalarType round_through) {
  return [&whole, round_through](const UnitLayout& unit, int64_t begin, int64_t count) {
    at::Tensor out = at::zeros({count}, at::kFloat);
    const int64_t end = begin + count;
    for (size_t i = 0; i < unit.param_names.size(); ++i) {
      const at::Tensor& t = whole.at(unit.param_names[i]);
      const int64_t offset = unit.offsets[i];
      const int64_t from = std::max(begin, offset), to = std::min(end, offset + t.numel());
      if (from < to)
        out.narrow(0, from - begin, to - from).copy_(t.reshape({-1}).narrow(0, from - offset, to - from).to(round_through));
    }
    return out;
  };
}

ShardSource slices_of(const ShardLayout& saved, const std::vector<TensorMap>& shards, const std::string& kind) {
  return [&saved, &shards, kind](const UnitLayout& unit, int64_t begin, int64_t count) {
    for (size_t u = 0; u < saved.units.size(); ++u)
      if (saved.units[u].name == unit.name) return read_flat_range(saved, shards, kind, u, begin, count);
    TORCH_CHECK(false, "the checkpoint has no unit ", unit.name);
    return at::Tensor();
  };
}

ShardedDecoder::ShardedDecoder(Decoder model, Communicator& comm, ShardOptions options, const ShardSource& source)
    : model_(std::move(model)), comm_(comm), options_(options) {
  TORCH_CHECK(!source || options_.shard_parameters, "a shard source needs shard_parameters (zero_stage 3)");
  std::map<std::string, size_t> named;
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) named.emplace(item.key(), named.size());
  at::NoGradGuard no_grad;
  layout_.ranks = comm_.size();
  for (DecoderUnit& du : model_->units()) {
    auto unit = std::make_shared<Unit>();
    layout_.units.push_back(make_unit_layout(du.name, du.param_names, du.shapes, comm_.size()));
    const UnitLayout& layout = layout_.units.back();
    unit->params = du.params;
    for (const std::string& name : du.param_names) unit->named_index.push_back(named.at(name));
    unit->offsets = layout.offsets;
    unit->shapes = layout.shapes;
    unit->numel = layout.numel;
    unit->shard = layout.shard;
    if (options_.shard_parameters) {
      const at::Tensor& first = unit->params.front();
      const int64_t begin = unit->shard * comm_.rank();
      if (source) {
        unit->master = source(layout, begin, unit->shard).to(first.device(), at::kFloat).contiguous();
        TORCH_CHECK(unit->master.numel() == unit->shard, "shard source gave ", unit->master.numel(), " elements for ",
                    unit->shard, " of unit ", layout.name);
      } else {
        unit->master = at::zeros({unit->shard}, first.options().dtype(at::kFloat).requires_grad(false));
        const int64_t end = begin + unit->shard;
        for (size_t i = 0; i < unit->params.size(); ++i) {
          const int64_t offset = unit->offsets[i], n = unit->params[i].numel();
          const int64_t from = std::max(begin, offset), to = std::min(end, offset + n);
          if (from < to)
            unit->master.narrow(0, from - begin, to - from).copy_(unit->params[i].detach().reshape({-1}).narrow(0, from - offset, to - from));
        }
      }
      bool trainable = false;
      for (const at::Tensor& p : unit->params) trainable = trainable || p.requires_grad();
      unit->master.set_requires_grad(trainable);
      for (at::Tensor& p : unit->params) p.set_data(placeholder(p, options_.param_dtype));
    }
    units_.push_back(std::move(unit));
  }
  prefetch_ = options_.shard_parameters && units_.size() > 1 &&
              options_.prefetch.value_or(units_.front()->master.is_cuda());
  model_->set_unit_call([this](size_t unit, const at::Tensor& input, const UnitBody& body) { return call(unit, input, body); });
}

ShardedDecoder::~ShardedDecoder() {
  model_->set_unit_call({});
  pending_.reset();  // waits for a gather still in flight
}

size_t ShardedDecoder::next_in_forward(size_t unit, const at::Tensor& input) const {
  const size_t none = units_.size();
  if (!prefetch_) return none;
  if (unit == 0) return input.is_floating_point() ? none : 1;  // only the embedding call (token ids) precedes layer 1
  return unit + 1 < units_.size() ? unit + 1 : 0;             // the last layer precedes the final norm
}

size_t ShardedDecoder::next_in_backward(size_t unit) const {
  const size_t none = units_.size();
  if (!prefetch_ || unit == 0) return none;
  if (unit > 1) return unit - 1;
  return units_.front()->master.requires_grad() ? 0 : none;  // the embedding's backward, when it has one
}

void ShardedDecoder::gather(Unit& unit, size_t next) {
  if (unit.gathers++ == 0) {
    at::NoGradGuard no_grad;
    if (pending_ && units_[prefetched_].get() == &unit) {
      finish_prefetch();
      ++prefetch_counts_.used;
    } else {
      drop_prefetch();  // another unit came first: at most two units are whole at once
      const auto start = std::chrono::steady_clock::now();
      const at::Tensor local = unit.master.detach().to(options_.param_dtype);
      at::Tensor full = at::empty({comm_.size(), unit.shard}, local.options());
      comm_.all_gather_into(full, local);
      unit.gather_seconds += seconds_since(start);
      install(unit, full);
    }
  }
  if (next < units_.size()) start_prefetch(next);
}

void ShardedDecoder::start_prefetch(size_t index) {
  Unit& unit = *units_[index];
  if (unit.gathers > 0 || (pending_ && prefetched_ == index)) return;
  drop_prefetch();
  at::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  const at::Tensor local = unit.master.detach().to(options_.param_dtype);
  pending_full_ = at::empty({comm_.size(), unit.shard}, local.options());
  pending_ = comm_.start_all_gather_into(pending_full_, local);
  prefetched_ = index;
  unit.gather_seconds += seconds_since(start);
}

void ShardedDecoder::finish_prefetch() {
  Unit& unit = *units_[prefetched_];
  const auto start = std::chrono::steady_clock::now();
  pending_->wait();
  unit.gather_seconds += seconds_since(start);
  pending_.reset();
  // Installed when its unit is being gathered now (what it was started for); else dropped.
  if (unit.gathers > 0) install(unit, pending_full_);
  pending_full_ = at::Tensor();
}

void ShardedDecoder::drop_prefetch() {
  if (!pending_) return;
  finish_prefetch();
  ++prefetch_counts_.wasted;
}

at::Tensor ShardedDecoder::call(size_t index, const at::Tensor& input, const UnitBody& body) {
  Unit& unit = *units_[index];
  const bool recording = at::GradMode::is_enabled();
  auto state = c10::make_intrusive<UnitCallState>();
  state->body = body;
  state->unit = &unit;
  state->comm = &comm_;
  state->options = options_;
  state->owner = this;
  if (!options_.shard_parameters) {
    // The root (embeddings, norm, head) is cheap to keep; its input (token ids) needs no gradient.
    if (!options_.activation_checkpointing || index == 0 || !recording || !input.requires_grad()) return body(input);
    return UnitFunction::apply(input, at::empty({0}, input.options()), state);  // no master: an empty stand-in
  }
  if (!recording || !unit.master.requires_grad()) {
    gather(unit, next_in_forward(index, input));
    at::Tensor out = body(input);
    release_unit(unit, options_.param_dtype);
    return out;
  }
  state->next_in_forward = next_in_forward(index, input);
  state->next_in_backward = next_in_backward(index);
  return UnitFunction::apply(input, unit.master, state);
}

std::vector<at::Tensor> ShardedDecoder::master_shards() const {
  std::vector<at::Tensor> out;
  for (const auto& unit : units_) out.push_back(unit->master);
  return out;
}

int64_t ShardedDecoder::shard_numel() const {
  int64_t total = 0;
  for (const auto& unit : units_) total += unit->shard;
  return total;
}

ShardedDecoder::CollectiveSeconds ShardedDecoder::collective_seconds() const {
  CollectiveSeconds total;
  for (const auto& unit : units_) {
    total.gather += unit->gather_seconds;
    total.reduce_scatter += unit->reduce_scatter_seconds;
  }
  return total;
}

void ShardedDecoder::gather_all() {
  if (!options_.shard_parameters) return;
  for (auto& unit : units_) gather(*unit, units_.size());
}

void ShardedDecoder::release_all() {
  if (!options_.shard_parameters) return;
  for (auto& unit : units_) release_unit(*unit, options_.param_dtype);
}

std::vector<at::Tensor> ShardedDecoder::whole_from_shards(const std::vector<at::Tensor>& shards, bool root_only) {
  TORCH_CHECK(shards.size() == units_.size(), "whole_from_shards: ", shards.size(), " shards for ", units_.size(), " units");
  size_t count = 0;
  for (const auto& unit : units_) count += unit->params.size();
  std::vector<at::Tensor> whole(count);
  for (size_t u = 0; u < units_.size(); ++u) {
    const Unit& unit = *units_[u];
    const at::Tensor flat = comm_.all_gather(shards[u].detach().contiguous()).view({-1});
    if (root_only && comm_.rank() != 0) continue;
    for (size_t i = 0; i < unit.params.size(); ++i) {
      const int64_t numel = c10::multiply_integers(unit.shapes[i]);
      whole[unit.named_index[i]] = flat.narrow(0, unit.offsets[i], numel).view(unit.shapes[i]);
    }
  }
  if (root_only && comm_.rank() != 0) whole.clear();
  return whole;
}

void ShardedDecoder::visit_whole_units(at::ScalarType dtype, const UnitVisitor& visit) {
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units_.size(); ++u) {
    const Unit& unit = *units_[u];
    const at::Tensor flat = comm_.all_gather(unit.master.detach().to(dtype)).view({-1});
    if (comm_.rank() != 0) continue;
    std::vector<at::Tensor> params;
    for (size_t i = 0; i < unit.params.size(); ++i)
      params.push_back(flat.narrow(0, unit.offsets[i], c10::multiply_integers(unit.shapes[i])).view(unit.shapes[i]));
    visit(layout_.units[u], params);
  }
}

std::vector<at::Tensor> ShardedDecoder::shards_from_whole(const std::vector<at::Tensor>& whole) const {
  std::vector<at::Tensor> out;
  at::NoGradGuard no_grad;
  for (size_t u = 0; u < units_.size(); ++u) {
    const Unit& unit = *units_[u];
    at::Tensor shard = at::zeros({unit.shard}, whole.front().options().dtype(at::kFloat));
    const int64_t begin = unit.shard * comm_.rank(), end = begin + unit.shard;
    for (size_t i = 0; i < unit.params.size(); ++i) {
      const at::Tensor& t = whole.at(unit.named_index[i]);
      const int64_t offset = unit.offsets[i];
      const int64_t from = std::max(begin, offset), to = std::min(end, offset + t.numel());
      if (from < to) shard.narrow(0, from - begin, to - from).copy_(t.detach().reshape({-1}).narrow(0, from - offset, to - from));
    }
    out.push_back(shard);
  }
  return out;
}

std::unique_ptr<ShardedDecoder> shard(Decoder model, Communicator& comm, const ShardOptions& options,
                                      const ShardSource& source) {
  return std::make_unique<ShardedDecoder>(std::move(model), comm, options, source);
}

}  // namespace grpo
