// Validate Prometheus Operator custom resources against the operator's CRD schemas
// (@kubernetes-models/prometheus-operator, installed by k8s/tools.sh). Reads a JSON array of
// objects on stdin; prints one line per invalid object; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const models = resolve(process.argv[2], "node_modules/@kubernetes-models/prometheus-operator");
const docs = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const [group, version] = doc.apiVersion.split("/");
  const mod = await import(pathToFileURL(join(models, group, version, `${doc.kind}.js`)).href);
  try {
    new mod[doc.kind](doc).validate();
    console.log(`ok ${doc.kind}/${doc.metadata.name}`);
  } catch (e) {
    bad++;
    console.log(`invalid ${doc.kind}/${doc.metadata.name}: ${e.message}`);
  }
}
process.exit(bad ? 1 : 0);
