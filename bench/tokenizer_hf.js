// Hugging Face tokenizers (the Rust library through its official npm binding) encoding the same
// corpus as bench_tokenizer: every JSON string line of CORPUS, one at a time, no special tokens.
// Usage: node bench/tokenizer_hf.js TOKENIZER_DIR CORPUS.jsonl   (needs `npm install tokenizers`)
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [dir, corpusPath] = process.argv.slice(2);
  const tokenizer = Tokenizer.fromFile(`${dir}/tokenizer.json`);
  const strings = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length).map((l) => JSON.parse(l));
  const bytes = strings.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0);
  let tokens = 0;
  const start = process.hrtime.bigint();
  for (const s of strings) tokens += (await tokenizer.encode(s, null, { addSpecialTokens: false })).getIds().length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`hf tokenizers encode: ${(bytes / 1e6 / seconds).toFixed(2)} MB/s (${tokens} tokens)`);
}
main();
