// The one class of the Kubernetes client the checks use. Imported by name
// here (and this module imported lazily) so the bundler keeps only what it
// needs: a dynamic import of the whole package would bundle all of it
// (14 MB of generated API models) into the single executable.
export { CoreV1Api } from '@kubernetes/client-node';
