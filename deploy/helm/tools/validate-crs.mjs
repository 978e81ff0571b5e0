// Validates prometheus-operator objects (monitoring.coreos.com/v1) against the validators of
// @kubernetes-models/prometheus-operator (generated from prometheus-operator's API types: types,
// required fields, enums, patterns such as durations; unknown fields are not reported).
//
//   node validate-crs.mjs < objects.json      (a JSON array of objects)
//
// Prints one line per object: "ok KIND/NAME" or "invalid KIND/NAME: reason"; exits 1 when one is
// invalid or of a kind it has no validator for. The package is looked up in CHART_TOOLS_DIR
// (default /opt/celery-jobmon-tools), where install.sh puts it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.env.CHART_TOOLS_DIR || "/opt/celery-jobmon-tools";
const models = join(tools, "node_modules", "@kubernetes-models", "prometheus-operator");
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const object of objects) {
  const label = `${object.kind}/${object.metadata?.name}`;
  const [group, version] = String(object.apiVersion).split("/");
  let Model;
  try {
    const module = await import(pathToFileURL(join(models, group, version, `${object.kind}.js`)));
    Model = module[object.kind];
  } catch (error) {
    console.log(`invalid ${label}: no validator for ${object.apiVersion} ${object.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${label}`);
  } catch (error) {
    console.log(`invalid ${label}: ${error.message.replace(/\s+/g, " ")}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
