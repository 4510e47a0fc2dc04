#include "models/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "models/decoder.h"
#include "models/hf_config.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_st_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  const fs::path dir = temp_dir("dtypes");
  TensorMap tensors{{"f32", at::randn({3, 4})},
                    {"bf16", at::randn({5}).to(at::kBFloat16)},
                    {"i64", at::arange(6, at::kLong).view({2, 3})},
                    {"empty", at::zeros({0, 3})},
                    {"scalar", at::scalar_tensor(2.5)}};
  ASSERT_TRUE(write_safetensors((dir / "a.safetensors").string(), tensors).is_ok());
  StatusOr<TensorMap> back = read_safetensors((dir / "a.safetensors").string());
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(back->at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back->at(name), t)) << name;
  }
  fs::remove_all(dir);
}

// An independent reader (Python's standard library, written from the format description) must
// accept what we write and see the same bytes.
TEST(Safetensors, ReadableByAnIndependentReader) {
  const fs::path dir = temp_dir("python");
  const at::Tensor w = at::arange(12, at::kFloat).view({3, 4}) / 7;
  ASSERT_TRUE(write_safetensors((dir / "m.safetensors").string(), {{"w", w}, {"b", at::ones({2}, at::kBFloat16)}}).is_ok());
  const std::string script =
      "import json,struct,sys\n"
      "d=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',d[:8])[0]; h=json.loads(d[8:8+n])\n"
      "assert n%8==0 and h['__metadata__']=={'format':'pt'}\n"
      "e=h['w']; a,b=e['data_offsets']; assert e['dtype']=='F32' and e['shape']==[3,4]\n"
      "v=struct.unpack('<12f', d[8+n+a:8+n+b]); assert abs(v[11]-11/7)<1e-6\n"
      "e=h['b']; assert e['dtype']=='BF16' and e['shape']==[2]\n"
      "print('ok')\n";
  std::ofstream(dir / "check.py") << script;
  const std::string command = "python3 " + (dir / "check.py").string() + " " + (dir / "m.safetensors").string();
  EXPECT_EQ(std::system(command.c_str()), 0);
  fs::remove_all(dir);
}

TEST(Safetensors, ShardedIndexIsFollowed) {
  const fs::path dir = temp_dir("sharded");
  ASSERT_TRUE(write_safetensors((dir / "part-1.safetensors").string(), {{"a", at::ones({2})}}).is_ok());
  ASSERT_TRUE(write_safetensors((dir / "part-2.safetensors").string(), {{"b", at::zeros({3})}}).is_ok());
  ASSERT_TRUE(write_file_atomic((dir / "model.safetensors.index.json").string(),
                                R"({"metadata": {}, "weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}})")
                  .is_ok());
  StatusOr<TensorMap> tensors = read_safetensors_dir(dir.string());
  ASSERT_TRUE(tensors.is_ok()) << tensors.status().message();
  EXPECT_EQ(tensors->size(), 2u);
  EXPECT_EQ(tensors->at("b").size(0), 3);

  ASSERT_TRUE(write_file_atomic((dir / "model.safetensors.index.json").string(),
                                R"({"weight_map": {"c": "part-1.safetensors"}})")
                  .is_ok());
  tensors = read_safetensors_dir(dir.string());
  ASSERT_FALSE(tensors.is_ok());
  EXPECT_NE(tensors.status().message().find("'c'"), std::string::npos) << tensors.status().message();
  fs::remove_all(dir);
}

TEST(Safetensors, StreamWriterWritesTensorsAsTheyArriveInTheDeclaredOrder) {
  const fs::path dir = temp_dir("stream");
  const at::Tensor a = at::arange(6, at::kFloat).view({2, 3}), b = at::tensor({1.5, -2.0});
  {
    // Declared b before a: the file lays them out in that order, whatever their names.
    SafetensorsStreamWriter writer((dir / "m.safetensors").string(), {{"b", at::kBFloat16, {2}}, {"a", at::kFloat, {2, 3}}});
    ASSERT_TRUE(writer.write("b", b).is_ok());
    ASSERT_TRUE(writer.write("a", a).is_ok());
    ASSERT_TRUE(writer.commit().is_ok());
  }
  StatusOr<TensorMap> read = read_safetensors((dir / "m.safetensors").string());
  ASSERT_TRUE(read.is_ok()) << read.status().message();
  EXPECT_TRUE(at::equal(read->at("a"), a));
  EXPECT_EQ(read->at("b").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(read->at("b").to(at::kFloat), b.to(at::kFloat)));

  SafetensorsStreamWriter wrong((dir / "w.safetensors").string(), {{"a", at::kFloat, {2, 3}}, {"b", at::kFloat, {2}}});
  const Status out_of_order = wrong.write("b", b);
  ASSERT_FALSE(out_of_order.is_ok());
  EXPECT_NE(out_of_order.message().find("expected 'a'"), std::string::npos) << out_of_order.message();
  SafetensorsStreamWriter short_file((dir / "s.safetensors").string(), {{"a", at::kFloat, {2, 3}}, {"b", at::kFloat, {2}}});
  ASSERT_TRUE(short_file.write("a", a).is_ok());
  EXPECT_FALSE(short_file.commit().is_ok());
  EXPECT_FALSE(fs::exists(dir / "s.safetensors")) << "an unfinished file must not appear";
  const Status misshaped = SafetensorsStreamWriter((dir / "x.safetensors").string(), {{"a", at::kFloat, {3, 2}}}).write("a", a);
  EXPECT_NE(misshaped.message().find("declared 3x2"), std::string::npos) << misshaped.message();
  fs::remove_all(dir);
}

DecoderOptions tiny_untied() {
  DecoderOptions o;
  o.architecture = DecoderArchitecture::kQwen2;
  o.vocab_size = 40;
  o.hidden_size = 16;
  o.intermediate_size = 24;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 4;
  o.qkv_bias = true;
  o.tie_word_embeddings = false;
  o.max_position_embeddings = 64;
  return o;
}

// The decoder's own modules draw their initial values as torch::nn::Embedding and Linear do, in the
// same order, so a seeded random model is the one it always was.
TEST(DecoderInit, SameDrawsAsTorchModules) {
  const DecoderOptions o = tiny_untied();
  at::manual_seed(5);
  Decoder d(o);
  at::manual_seed(5);
  torch::nn::Embedding embed(o.vocab_size, o.hidden_size);
  torch::nn::Linear q(torch::nn::LinearOptions(o.hidden_size, o.num_heads * o.head_dim).bias(true));
  auto params = d->named_parameters();
  EXPECT_TRUE(at::equal(params["model.embed_tokens.weight"], embed->weight));
  EXPECT_TRUE(at::equal(params["model.layers.0.self_attn.q_proj.weight"], q->weight));
  EXPECT_TRUE(at::equal(params["model.layers.0.self_attn.q_proj.bias"], q->bias));
  EXPECT_TRUE(at::equal(params["model.norm.weight"], at::ones({o.hidden_size})));
}

// A deferred decoder allocates nothing and knows every full shape; map_decoder checks the mapped
// weights against those shapes (one file or a sharded index) and hands them over unread.
TEST(MapDecoder, DeferredParametersAndMappedWeightsOfAShardedIndex) {
  const DecoderOptions o = tiny_untied();
  Decoder allocated(o), deferred(o, ParameterStorage::kDeferred);
  for (const auto& item : deferred->named_parameters()) EXPECT_EQ(item.value().numel(), 0) << item.key();
  ASSERT_EQ(deferred->parameter_shapes().size(), allocated->named_parameters().size());
  for (const auto& item : allocated->named_parameters())
    EXPECT_EQ(deferred->parameter_shapes().at(item.key()), item.value().sizes().vec()) << item.key();

  const fs::path dir = temp_dir("mapped");
  ASSERT_TRUE(save_decoder(allocated, dir.string()).is_ok());
  StatusOr<TensorMap> whole = read_safetensors((dir / "model.safetensors").string());
  ASSERT_TRUE(whole.is_ok());
  TensorMap first, second;
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  for (const auto& [name, t] : *whole) {
    const bool in_first = name.find("layers.1") == std::string::npos;
    (in_first ? first : second)[name] = t.clone();
    index["weight_map"][name] = in_first ? "part-1.safetensors" : "part-2.safetensors";
  }
  whole = Status::error("released");
  fs::remove(dir / "model.safetensors");
  ASSERT_TRUE(write_safetensors((dir / "part-1.safetensors").string(), first).is_ok());
  ASSERT_TRUE(write_safetensors((dir / "part-2.safetensors").string(), second).is_ok());
  ASSERT_TRUE(write_file_atomic((dir / "model.safetensors.index.json").string(), index.dump()).is_ok());
  StatusOr<MappedDecoder> mapped = map_decoder(dir.string());
  ASSERT_TRUE(mapped.is_ok()) << mapped.status().message();
  for (const auto& item : allocated->named_parameters()) {
    EXPECT_EQ(mapped->model->named_parameters()[item.key()].numel(), 0) << item.key();
    EXPECT_TRUE(at::equal(mapped->weights.at(item.key()), item.value())) << item.key();
  }
  second["model.layers.1.mlp.up_proj.weight"] = at::zeros({3, 3});
  ASSERT_TRUE(write_safetensors((dir / "part-2.safetensors").string(), second).is_ok());
  mapped = map_decoder(dir.string());
  ASSERT_FALSE(mapped.is_ok());
  EXPECT_NE(mapped.status().message().find("'model.layers.1.mlp.up_proj.weight' has shape 3x3"), std::string::npos)
      << mapped.status().message();
  fs::remove_all(dir);
}

TEST(Safetensors, CorruptFilesAreErrorsNamingTheProblem) {
  const fs::path dir = temp_dir("corrupt");
  const std::string path = (dir / "x.safetensors").string();
  ASSERT_TRUE(write_file_atomic(path, "abc").is_ok());
  EXPECT_NE(read_safetensors(path).status().message().find("too short"), std::string::npos);

  std::string header = R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  ASSERT_TRUE(write_file_atomic(path, bytes + header + std::string(8, '\0')).is_ok());
  const std::string message = read_safetensors(path).status().message();
  EXPECT_NE(message.find("'t' holds 8 bytes"), std::string::npos) << message;
  fs::remove_all(dir);
}

DecoderOptions tiny_options() {
  DecoderOptions o;
  o.vocab_size = 11;
  o.hidden_size = 8;
  o.intermediate_size = 12;
  o.num_layers = 1;
  o.num_heads = 2;
  o.num_kv_heads = 1;
  o.head_dim = 4;
  o.qkv_bias = true;
  o.tie_word_embeddings = true;
  return o;
}

TEST(LoadWeights, MissingUnexpectedAndMisshapedTensorsAreNamed) {
  Decoder decoder(tiny_options());
  TensorMap tensors;
  for (const auto& item : decoder->named_parameters()) tensors[item.key()] = item.value().detach().clone();
  EXPECT_TRUE(load_weights(decoder, tensors).is_ok());

  TensorMap missing = tensors;
  missing.erase("model.norm.weight");
  EXPECT_EQ(load_weights(decoder, missing).message(), "checkpoint is missing tensor 'model.norm.weight'");

  TensorMap extra = tensors;
  extra["model.layers.7.mlp.up_proj.weight"] = at::zeros({1});
  EXPECT_EQ(load_weights(decoder, extra).message(), "checkpoint has unexpected tensor 'model.layers.7.mlp.up_proj.weight'");

  TensorMap misshaped = tensors;
  misshaped["model.layers.0.self_attn.k_proj.bias"] = at::zeros({5});
  EXPECT_EQ(load_weights(decoder, misshaped).message(),
            "tensor 'model.layers.0.self_attn.k_proj.bias' has shape 5, the model needs 4");
}

TEST(HfConfig, UnsupportedValuesAreNamed) {
  EXPECT_EQ(parse_decoder_config(R"({"model_type": "gpt2"})", "c.json").status().message(),
            "c.json: model_type 'gpt2' is not supported (supported: qwen2, llama)");
  EXPECT_EQ(parse_decoder_config(R"({"model_type": "llama", "vocab_size": 4})", "c.json").status().message(),
            "c.json: missing required key 'hidden_size'");
  const std::string base =
      R"({"model_type": "llama", "vocab_size": 4, "hidden_size": 8, "intermediate_size": 8,
          "num_hidden_layers": 1, "num_attention_heads": 2, )";
  EXPECT_EQ(parse_decoder_config(base + R"("rope_scaling": {"type": "yarn"}})", "c.json").status().message(),
            "c.json: rope_scaling type 'yarn' is not supported (llama3, or null)");
  EXPECT_EQ(parse_decoder_config(base + R"("num_key_value_heads": 3})", "c.json").status().message(),
            "c.json: num_attention_heads 2 is not a multiple of num_key_value_heads 3");
  StatusOr<DecoderOptions> ok = parse_decoder_config(base + R"("eos_token_id": [5, 7]})", "c.json");
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->num_kv_heads, 2);  // defaults to num_attention_heads
  EXPECT_EQ(ok->head_dim, 4);
  EXPECT_EQ(ok->eos_token_ids, (std::vector<int64_t>{5, 7}));
}

}  // namespace
}  // namespace grpo
