#include "trainer/disaggregated.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/logging.h"
#include "trainer/dynamic_sampling.h"
#include "trainer/fsdp.h"
#include "trainer/shard_layout.h"
#include "trainer/train_common.h"

namespace grpo {
namespace {

// Doubles travel as their bits: JSON would print NaN as null and is not needed to be exact.
uint64_t to_bits(double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
double from_bits(const nlohmann::json& bits) {
  const uint64_t b = bits.get<uint64_t>();
  double value = 0;
  std::memcpy(&value, &b, sizeof value);
  return value;
}
nlohmann::json map_to_bits(const std::map<std::string, double>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : values) out[key] = to_bits(value);
  return out;
}
std::map<std::string, double> map_from_bits(const nlohmann::json& bits) {
  std::map<std::string, double> out;
  for (const auto& [key, value] : bits.items()) out[key] = from_bits(value);
  return out;
}

const char* const kTensorNames[] = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "sampling_logp"};
std::vector<at::Tensor*> batch_tensors(RolloutBatch& b) {
  return {&b.prompt_ids, &b.prompt_mask, &b.completion_ids, &b.completion_mask, &b.sampling_logp};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The per-unit checksums of trainer 0 (world rank 0) against every rollout rank's; throws the same
// error on every rank.
void compare_checksums(Communicator& host, const RolloutLayout& layout, Decoder& model, const std::vector<double>& local) {
  const std::vector<DecoderUnit> units = model->units();
  const at::Tensor all = host.all_gather(at::tensor(local, at::kDouble));  // [world, units]
  const at::Tensor reference = all[0];
  for (int r = layout.trainer_ranks; r < layout.trainer_ranks + layout.rollout_ranks; ++r) {
    for (int64_t u = 0; u < reference.numel(); ++u) {
      const double want = reference[u].item<double>(), got = all[r][u].item<double>();
      if (want != got)
        throw std::runtime_error(fmt::format(
            "weight sync: rollout rank {} holds different weights than the trainers in unit {} ({}): checksum {:.17g}, "
            "trainer rank 0 has {:.17g}",
            r, u, units[static_cast<size_t>(u)].name, got, want));
    }
  }
}

// How ZeRO-3 cuts `model` over `ranks` trainer ranks (trainer/fsdp.h): a rollout rank's view of
// the shards it receives.
ShardLayout shard_layout_of(Decoder& model, int64_t ranks) {
  ShardLayout layout;
  layout.ranks = ranks;
  for (const DecoderUnit& unit : model->units())
    layout.units.push_back(make_unit_layout(unit.name, unit.param_names, unit.shapes, ranks));
  return layout;
}

// Elements of shard `shard` that belong to the unit (the last shards end in padding, or hold none).
int64_t shard_elements(const UnitLayout& unit, int64_t shard) {
  return std::clamp<int64_t>(unit.numel - shard * unit.shard, 0, unit.shard);
}

// unit_checksums' sum for elements [begin, begin + values.numel()) of `unit` flattened (`values`:
// those elements, any floating dtype): value * (1 + its index in its parameter mod 7), in float64.
// The elements of each weight are added up apart, in order (so neighbouring additions do not wait
// for each other), then weighted. A fixed order, not ATen's threaded sum: a trainer rank's sum
// over its shard and a rollout rank's over the same elements of its assembled unit have the same
// bits whenever the values do, whatever either side's thread count; and no element is copied to
// float64 (a shard-sized allocation).
double range_checksum(const UnitLayout& unit, int64_t begin, const at::Tensor& values) {
  const at::Tensor cpu = values.detach().to(at::kCPU).contiguous();
  const int64_t end = begin + cpu.numel();
  TORCH_CHECK(begin >= 0 && end <= unit.numel, "range_checksum: elements ", begin, "-", end, " of unit ", unit.name,
              " with ", unit.numel);
  std::array<double, 7> by_weight{};  // [w]: the elements whose weight is w + 1
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, cpu.scalar_type(), "range_checksum", [&] {
    const scalar_t* data = cpu.data_ptr<scalar_t>();
    for (size_t p = 0; p < unit.offsets.size(); ++p) {
      const int64_t offset = unit.offsets[p], param_end = p + 1 < unit.offsets.size() ? unit.offsets[p + 1] : unit.numel;
      const int64_t from = std::max(begin, offset), to = std::min(end, param_end);
      int weight = static_cast<int>((from - offset) % 7);
      for (int64_t i = from; i < to; ++i) {
        by_weight[static_cast<size_t>(weight)] += static_cast<double>(data[i - begin]);
        if (++weight == 7) weight = 0;
      }
    }
  });
  double sum = 0;
  for (size_t w = 0; w < by_weight.size(); ++w) sum += static_cast<double>(w + 1) * by_weight[w];
  return sum;
}

// `local` [units, trainer ranks] float64: a trainer rank's checksums of its own shards in its
// column (zeros elsewhere), a rollout rank's of every shard. Every rank of `host` together; throws
// the same error on every rank.
void compare_shard_checksums(Communicator& host, const RolloutLayout& layout, const ShardLayout& shards,
                             const at::Tensor& local) {
  const at::Tensor all = host.all_gather(local);  // [world, units, trainer ranks]
  const auto sums = all.accessor<double, 3>();
  for (int r = layout.trainer_ranks; r < layout.trainer_ranks + layout.rollout_ranks; ++r) {
    for (size_t u = 0; u < shards.units.size(); ++u) {
      const UnitLayout& unit = shards.units[u];
      for (int t = 0; t < layout.trainer_ranks; ++t) {
        const double want = sums[t][static_cast<int64_t>(u)][t], got = sums[r][static_cast<int64_t>(u)][t];
        if (want != got)
          throw std::runtime_error(fmt::format(
              "weight sync: rollout rank {} holds different weights than the trainers in unit {} ({}), in trainer rank "
              "{}'s shard (elements {}-{} of the unit): checksum {:.17g}, trainer rank {} has {:.17g}",
              r, u, unit.name, t, t * unit.shard, t * unit.shard + shard_elements(unit, t), got, t, want));
      }
    }
  }
}

WeightSyncStats receive_weight_shards(Communicator& host, const RolloutLayout& layout, RolloutEngine& engine,
                                      int64_t version) {
  const auto start = std::chrono::steady_clock::now();
  WeightSyncStats stats;
  Decoder& model = engine.model();
  const ShardLayout shards = shard_layout_of(model, layout.trainer_ranks);
  std::map<std::string, size_t> index;
  std::vector<at::Tensor> params;
  for (const auto& item : model->named_parameters()) {
    index.emplace(item.key(), index.size());
    params.push_back(item.value());
  }
  const at::TensorOptions options = params.front().options().requires_grad(false);
  const int64_t trainers = layout.trainer_ranks;
  // The first rollout rank receives the shards (it is the last rank of shard_owners) and passes
  // each assembled unit on to the other rollout ranks (rank 0 of their role communicator).
  if (layout.shard_owners) layout.shard_owners->barrier();
  std::vector<at::Tensor> tensors(params.size());
  for (const UnitLayout& unit : shards.units) {
    at::Tensor received;  // [trainer ranks, shard]: the unit flattened, then padding
    if (layout.shard_owners) {
      at::Tensor all = at::empty({trainers + 1, unit.shard}, options);
      const at::Tensor own = at::zeros({unit.shard}, options);  // the root's part of the gather: unused
      layout.shard_owners->gather_into(all, own, static_cast<int>(trainers));
      received = all.narrow(0, 0, trainers);
    } else {
      received = at::empty({trainers, unit.shard}, options);
    }
    if (layout.rollout_ranks > 1) layout.role->broadcast(received, 0);
    stats.bytes += static_cast<int64_t>(received.nbytes());
    const at::Tensor flat = received.view({-1});
    for (size_t i = 0; i < unit.param_names.size(); ++i)
      tensors[index.at(unit.param_names[i])] =
          flat.narrow(0, unit.offsets[i], c10::multiply_integers(unit.shapes[i])).view(unit.shapes[i]);
  }
  engine.load_weights(version, tensors);
  tensors.clear();
  // The checksums of what the engine now holds, cut as the trainers' shards.
  at::Tensor checksums = at::zeros({static_cast<int64_t>(shards.units.size()), trainers}, at::kDouble);
  for (size_t u = 0; u < shards.units.size(); ++u) {
    const UnitLayout& unit = shards.units[u];
    std::vector<at::Tensor> pieces;
    for (const std::string& name : unit.param_names) pieces.push_back(params[index.at(name)].detach().reshape({-1}));
    const at::Tensor flat = at::cat(pieces);
    for (int64_t t = 0; t < trainers; ++t)
      checksums[static_cast<int64_t>(u)][t] =
          range_checksum(unit, t * unit.shard, flat.narrow(0, t * unit.shard, shard_elements(unit, t)));
  }
  compare_shard_checksums(host, layout, shards, checksums);
  stats.seconds = seconds_since(start);
  return stats;
}

}  // namespace

RolloutLayout split_layout(Communicator& device_comm, int64_t rollout_ranks) {
  const int size = device_comm.size();
  if (rollout_ranks <= 0 || rollout_ranks >= size)
    throw std::runtime_error(fmt::format(
        "trainer.rollout_ranks = {} needs at least one trainer rank and one rollout rank, and the job has {} rank(s) "
        "(launch more ranks with mpirun -np, or set trainer.rollout_ranks: 0 for the colocated layout)",
        rollout_ranks, size));
  RolloutLayout layout;
  layout.rollout_ranks = static_cast<int>(rollout_ranks);
  layout.trainer_ranks = size - layout.rollout_ranks;
  layout.rollout = device_comm.rank() >= layout.trainer_ranks;
  layout.role = device_comm.split(layout.rollout ? 1 : 0);
  const bool in_weights = layout.rollout || device_comm.rank() == 0;
  std::unique_ptr<Communicator> weights = device_comm.split(in_weights ? 0 : 1);
  if (in_weights) layout.weights = std::move(weights);
  const bool in_shard_owners = !layout.rollout || device_comm.rank() == layout.trainer_ranks;
  std::unique_ptr<Communicator> shard_owners = device_comm.split(in_shard_owners ? 0 : 1);
  if (in_shard_owners) layout.shard_owners = std::move(shard_owners);
  return layout;
}

std::string encode_scored_batch(const ScoredBatch& scored) {
  RolloutBatch b = scored.batch;
  nlohmann::json header;
  header["group_size"] = b.group_size;
  header["policy_version"] = b.policy_version;
  header["prompt_index"] = b.prompt_index;
  std::vector<int> reasons;
  for (FinishReason r : b.finish_reasons) reasons.push_back(static_cast<int>(r));
  header["finish_reasons"] = reasons;
  header["generated_groups"] = scored.generated_groups;
  header["kept_groups"] = scored.kept_groups;
  header["reward_errors"] = scored.reward_errors;
  header["rollout_seconds"] = to_bits(scored.rollout_seconds);
  header["reward_seconds"] = to_bits(scored.reward_seconds);
  header["data_cursor"] = scored.data_cursor;
  header["samples"] = nlohmann::json::array();
  for (const RewardSample& s : scored.samples)
    header["samples"].push_back({{"id", s.id}, {"prompt", s.prompt}, {"completion", s.completion}, {"fields", s.fields},
                                 {"completion_tokens", s.completion_tokens}});
  header["scores"] = nlohmann::json::array();
  for (const SampleScores& s : scored.scores)
    header["scores"].push_back({{"total", to_bits(s.total)}, {"rewards", map_to_bits(s.rewards)},
                                {"components", map_to_bits(s.components)}, {"reasons", s.reasons}, {"errors", s.errors}});
  std::string payload;
  header["tensors"] = nlohmann::json::array();
  for (at::Tensor* t : batch_tensors(b)) {
    if (!t->defined()) {
      header["tensors"].push_back(nullptr);
      continue;
    }
    const at::Tensor cpu = t->to(at::kCPU).contiguous();
    header["tensors"].push_back({{"dtype", static_cast<int>(cpu.scalar_type())}, {"shape", cpu.sizes().vec()}});
    payload.append(static_cast<const char*>(cpu.data_ptr()), cpu.nbytes());
  }
  const std::string text = header.dump();
  const uint64_t length = text.size();
  std::string out(sizeof length, '\0');
  std::memcpy(out.data(), &length, sizeof length);
  return out + text + payload;
}

ScoredBatch decode_scored_batch(const std::string& bytes) {
  uint64_t length = 0;
  TORCH_CHECK(bytes.size() >= sizeof length, "decode_scored_batch: ", bytes.size(), " bytes");
  std::memcpy(&length, bytes.data(), sizeof length);
  TORCH_CHECK(bytes.size() >= sizeof length + length, "decode_scored_batch: truncated header");
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(sizeof length, length));
  ScoredBatch scored;
  RolloutBatch& b = scored.batch;
  b.group_size = header.at("group_size").get<int64_t>();
  b.policy_version = header.at("policy_version").get<int64_t>();
  b.prompt_index = header.at("prompt_index").get<std::vector<int64_t>>();
  for (int r : header.at("finish_reasons").get<std::vector<int>>()) b.finish_reasons.push_back(static_cast<FinishReason>(r));
  scored.generated_groups = header.at("generated_groups").get<int64_t>();
  scored.kept_groups = header.at("kept_groups").get<int64_t>();
  scored.reward_errors = header.at("reward_errors").get<int64_t>();
  scored.rollout_seconds = from_bits(header.at("rollout_seconds"));
  scored.reward_seconds = from_bits(header.at("reward_seconds"));
  scored.data_cursor = header.at("data_cursor");
  for (const nlohmann::json& s : header.at("samples")) {
    RewardSample sample;
    sample.id = s.at("id").get<std::string>();
    sample.prompt = s.at("prompt").get<std::string>();
    sample.completion = s.at("completion").get<std::string>();
    sample.fields = s.at("fields");
    sample.completion_tokens = s.at("completion_tokens").get<int64_t>();
    scored.samples.push_back(std::move(sample));
  }
  for (const nlohmann::json& s : header.at("scores")) {
    SampleScores score;
    score.total = from_bits(s.at("total"));
    score.rewards = map_from_bits(s.at("rewards"));
    score.components = map_from_bits(s.at("components"));
    score.reasons = s.at("reasons").get<std::map<std::string, std::string>>();
    score.errors = s.at("errors").get<std::vector<std::string>>();
    scored.scores.push_back(std::move(score));
  }
  size_t offset = sizeof length + length;
  const std::vector<at::Tensor*> tensors = batch_tensors(b);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const nlohmann::json& spec = header.at("tensors").at(i);
    if (spec.is_null()) continue;
    const auto type = static_cast<at::ScalarType>(spec.at("dtype").get<int>());
    at::Tensor t = at::empty(spec.at("shape").get<std::vector<int64_t>>(), at::TensorOptions().dtype(type));
    TORCH_CHECK(offset + t.nbytes() <= bytes.size(), "decode_scored_batch: truncated tensor ", kTensorNames[i]);
    std::memcpy(t.data_ptr(), bytes.data() + offset, t.nbytes());
    offset += t.nbytes();
    *tensors[i] = t;
  }
  return scored;
}

std::vector<ScoredBatch> gather_scored_batches(Communicator& host, const RolloutLayout& layout, const std::string& local) {
  const std::vector<std::string> all = all_gather_strings(host, local);
  std::vector<ScoredBatch> parts;
  for (int r = layout.trainer_ranks; r < layout.trainer_ranks + layout.rollout_ranks; ++r)
    parts.push_back(decode_scored_batch(all[static_cast<size_t>(r)]));
  return parts;
}

ScoredBatch trainer_share(const std::vector<ScoredBatch>& parts, int rank, int ranks, int64_t pad_id) {
  TORCH_CHECK(!parts.empty(), "trainer_share: no parts");
  ScoredBatch out;
  const ScoredBatch& first = parts.front();
  out.generated_groups = first.generated_groups;
  out.data_cursor = parts.back().data_cursor;
  int64_t group_size = 1, groups = 0, version = first.batch.policy_version;
  for (const ScoredBatch& p : parts) {
    if (p.batch.prompt_ids.defined()) group_size = p.batch.group_size;
    groups += static_cast<int64_t>(p.samples.size());
    if (rank == 0) out.reward_errors += p.reward_errors;
    out.rollout_seconds = std::max(out.rollout_seconds, p.rollout_seconds);
    out.reward_seconds = std::max(out.reward_seconds, p.reward_seconds);
    TORCH_CHECK(p.batch.policy_version == version, "trainer_share: parts sampled by different policy versions");
  }
  groups /= group_size;
  out.kept_groups = groups;
  const ItemShare mine = share_of(groups, rank, ranks);
  const int64_t begin = mine.begin, end = mine.end;
  std::vector<const RolloutBatch*> batches;
  std::vector<std::pair<size_t, int64_t>> rows;
  int64_t group = 0;
  for (const ScoredBatch& p : parts) {
    batches.push_back(&p.batch);
    const int64_t n = static_cast<int64_t>(p.samples.size());
    for (int64_t row = 0; row < n; ++row) {
      const int64_t g = group + row / group_size;
      if (g < begin || g >= end) continue;
      rows.emplace_back(batches.size() - 1, row);
      out.samples.push_back(p.samples[static_cast<size_t>(row)]);
      out.scores.push_back(p.scores[static_cast<size_t>(row)]);
    }
    group += n / group_size;
  }
  out.batch = gather_rows(batches, rows, pad_id);
  out.batch.group_size = group_size;
  out.batch.policy_version = version;
  return out;
}

RolloutControl broadcast_control(Communicator& host, const RolloutControl& control) {
  at::Tensor word = at::tensor({control.proceed ? int64_t{1} : int64_t{0}, control.step}, at::kLong);
  host.broadcast(word, 0);
  return {word[0].item<int64_t>() != 0, word[1].item<int64_t>()};
}

WeightSyncStats send_weights(Communicator& host, const RolloutLayout& layout, Decoder& model,
                             const std::vector<at::Tensor>& whole, at::ScalarType dtype) {
  const auto start = std::chrono::steady_clock::now();
  WeightSyncStats stats;
  std::vector<double> checksums(model->units().size(), 0.0);
  if (layout.weights) {  // trainer rank 0
    std::vector<at::Tensor> sent, flat;
    for (const at::Tensor& t : whole) {
      sent.push_back(t.detach().to(dtype));
      flat.push_back(sent.back().reshape({-1}));
    }
    at::Tensor buffer = at::cat(flat);
    // Apart from the transfer, the time until every rollout rank is ready to receive (one step off,
    // they may still be sampling).
    layout.weights->barrier();
    stats.wait_seconds = seconds_since(start);
    layout.weights->broadcast(buffer, 0);
    stats.bytes = stats.sent_bytes = static_cast<int64_t>(buffer.nbytes());
    checksums = unit_checksums(model, sent);
  }
  compare_checksums(host, layout, model, checksums);
  stats.seconds = seconds_since(start) - stats.wait_seconds;
  return stats;
}

WeightSyncStats send_weight_shards(Communicator& host, const RolloutLayout& layout, ShardedDecoder& model,
                                   at::ScalarType dtype) {
  TORCH_CHECK(model.sharded() && layout.shard_owners && !layout.rollout,
              "send_weight_shards: every trainer rank of a ZeRO-3 model");
  const auto start = std::chrono::steady_clock::now();
  WeightSyncStats stats;
  const ShardLayout& shards = model.layout();
  Communicator& owners = *layout.shard_owners;
  const int rank = owners.rank(), root = owners.size() - 1;  // trainers first, then the first rollout rank
  TORCH_CHECK(shards.ranks == layout.trainer_ranks && root == layout.trainer_ranks,
              "send_weight_shards: the model is cut over ", shards.ranks, " ranks, the layout has ", layout.trainer_ranks,
              " trainer ranks");
  // Apart from the transfer, the time until the first rollout rank is ready to receive (one step
  // off, it may still be sampling).
  owners.barrier();
  stats.wait_seconds = seconds_since(start);
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> masters = model.master_shards();
  at::Tensor checksums = at::zeros({static_cast<int64_t>(shards.units.size()), layout.trainer_ranks}, at::kDouble);
  for (size_t u = 0; u < shards.units.size(); ++u) {
    const UnitLayout& unit = shards.units[u];
    const at::Tensor part = masters[u].detach().to(dtype).contiguous();
    at::Tensor not_root;  // only the root receives
    owners.gather_into(not_root, part, root);
    stats.sent_bytes += static_cast<int64_t>(part.nbytes());
    stats.bytes += static_cast<int64_t>(part.nbytes()) * layout.trainer_ranks;
    checksums[static_cast<int64_t>(u)][rank] =
        range_checksum(unit, rank * unit.shard, part.narrow(0, 0, shard_elements(unit, rank)));
  }
  compare_shard_checksums(host, layout, shards, checksums);
  stats.seconds = seconds_since(start) - stats.wait_seconds;
  return stats;
}

WeightSyncStats receive_weights(Communicator& host, const RolloutLayout& layout, RolloutEngine& engine, int64_t version,
                                WeightSource source) {
  if (source == WeightSource::kShardOwners) return receive_weight_shards(host, layout, engine, version);
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> params = engine.model()->parameters();
  int64_t numel = 0;
  for (const at::Tensor& p : params) numel += p.numel();
  at::Tensor buffer = at::empty({numel}, params.front().options().requires_grad(false));
  layout.weights->barrier();
  layout.weights->broadcast(buffer, 0);
  std::vector<at::Tensor> tensors;
  int64_t offset = 0;
  for (const at::Tensor& p : params) {
    tensors.push_back(buffer.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  engine.load_weights(version, tensors);
  compare_checksums(host, layout, engine.model(), unit_checksums(engine.model(), engine.model()->parameters()));
  WeightSyncStats stats;
  stats.bytes = static_cast<int64_t>(buffer.nbytes());
  stats.seconds = seconds_since(start);
  return stats;
}

WeightSyncStats send_policy(TrainingRun& run, Communicator& host) {
  set_collective_context(fmt::format("after step {}: sending the weights to the rollout ranks {}-{}", run.step,
                                     run.layout->trainer_ranks, host.size() - 1));
  const at::ScalarType dtype = run.config.model.dtype == DType::kBFloat16 ? at::kBFloat16 : at::kFloat;
  if (weight_source(run) == WeightSource::kShardOwners) return send_weight_shards(host, *run.layout, *run.sharded, dtype);
  std::vector<at::Tensor> whole;
  if (run.comm->rank() == 0) whole = run.params;
  return send_weights(host, *run.layout, run.policy.model, whole, dtype);
}

WeightSource weight_source(const TrainingRun& run) {
  // What shard_options makes of trainer.zero_stage, known to the rollout ranks too (they build no
  // sharded model).
  return run.config.trainer.zero_stage == 3 ? WeightSource::kShardOwners : WeightSource::kTrainerRankZero;
}

ScoredBatch receive_batch(TrainingRun& run, Communicator& host) {
  set_collective_context(fmt::format("step {}: waiting for the batch of the rollout ranks {}-{}", run.step + 1,
                                     run.layout->trainer_ranks, host.size() - 1));
  broadcast_control(host, {true, run.step});
  const std::vector<ScoredBatch> parts = gather_scored_batches(host, *run.layout, "");
  set_collective_context(fmt::format("step {}", run.step + 1));
  return trainer_share(parts, run.comm->rank(), run.comm->size(), run.policy.pad_id);
}

void run_rollout_role(TrainingRun& run, RolloutEngine& engine, const std::function<ScoredBatch(int64_t)>& sample_step) {
  Communicator& host = world();
  // A run that ended at its dev target (run.finished) has no more batches to sample.
  const int64_t steps = run.finished ? run.step : run.config.trainer.steps;
  const int64_t staleness = run.config.rollout.max_staleness;
  int64_t step = run.step;  // the next batch the trainers will ask for (= their optimizer steps so far)
  set_collective_context(fmt::format("rollout rank: waiting for the weights of step {}", step));
  receive_weights(host, *run.layout, engine, step, weight_source(run));
  // Batches sampled ahead, oldest first; the next one to sample is step + ahead.size().
  std::deque<std::string> ahead;
  auto sample_next = [&]() {
    const int64_t next = step + static_cast<int64_t>(ahead.size());
    set_collective_context(fmt::format("rollout rank: sampling the batch of step {} with policy version {}", next + 1,
                                       engine.version()));
    ahead.push_back(encode_scored_batch(sample_step(next)));
  };
  while (static_cast<int64_t>(ahead.size()) < staleness && step + static_cast<int64_t>(ahead.size()) < steps) sample_next();
  for (;;) {
    set_collective_context(fmt::format("rollout rank: waiting for the trainers to ask for the batch of step {}", step + 1));
    const RolloutControl control = broadcast_control(host, {});
    if (!control.proceed) break;
    if (control.step != step)
      throw std::runtime_error(fmt::format("rollout rank: the trainers ask for the batch of step {}, expected step {}",
                                           control.step + 1, step + 1));
    if (ahead.empty()) sample_next();  // on-policy: sampled with the weights the trainers have now
    set_collective_context(fmt::format("rollout rank: sending the batch of step {}", step + 1));
    gather_scored_batches(host, *run.layout, ahead.front());
    ahead.pop_front();
    ++step;
    // Off-policy: the batch `staleness` steps ahead, sampled while the trainers train on this one.
    if (staleness > 0 && step - 1 + staleness < steps) sample_next();
    if (step < steps) {
      set_collective_context(fmt::format("rollout rank: waiting for the weights of step {}", step));
      receive_weights(host, *run.layout, engine, step, weight_source(run));
    }
  }
  log_info("rollout rank {} done after step {}", host.rank(), step);
}

}  // namespace grpo
