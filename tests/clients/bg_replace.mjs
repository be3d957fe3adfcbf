// A non-Python client of Backdrop's REST endpoint, as a Node.js script would call it (Node 18+: global fetch).
// usage: node bg_replace.mjs URL PRODUCT REFERENCE OUT
import { readFile, writeFile } from "node:fs/promises";

const [url, product, reference, out] = process.argv.slice(2);
const body = {
  image: (await readFile(product)).toString("base64"),
  ref_image: `data:image/jpeg;base64,${(await readFile(reference)).toString("base64")}`,
  prompt: "gold ring on white marble",
  samples: 1,
  scheduler: "Euler",
  num_inference_steps: 20,
  seed: 5,
  mask_model: "u2netp",
  resolution: 64,
};
const reply = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
if (!reply.ok) {
  console.error(reply.status, await reply.text());
  process.exit(1);
}
await writeFile(out, Buffer.from(await reply.arrayBuffer()));
console.log(reply.status, reply.headers.get("content-type"), reply.headers.get("x-seeds"));
